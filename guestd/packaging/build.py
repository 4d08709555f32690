"""Builds guestd for real guests: a pure-Python wheel and a Debian package.

    python guestd/packaging/build.py wheel [--out build/guestd]
    python guestd/packaging/build.py deb [--out build/guestd]

Prints the path of what it built. Runs on the build machine (the project's
venv: setuptools, dpkg-deb for the .deb), not in guests.

The wheel, ``virtplane-guestd``, holds the ``guestd`` package (not its
packaging/ folder), ``virtplane_common.framing`` with its package's
``__init__.py``, and ``virtplane.v1.guest_channel_pb2`` with the two
``__init__.py`` above it. The generated module is a guest copy: protoc's
check that the protobuf runtime is at least as new as protoc
(``_runtime_version.ValidateProtobufRuntimeVersion``) is removed, since the
module only needs the ``_builder`` functions that protobuf has had since
3.20, and guests bring older runtimes than this repository's protoc.

The .deb is the wheel unpacked under /usr/lib/python3/dist-packages (its
RECORD left out, so pip does not take it for its own), /usr/bin/virtplane-guestd,
the systemd unit and udev rule beside this file, the configuration file as a
conffile and the maintainer scripts in debian/.

Both are rebuilt only when what goes into them changed (a key file next to them).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DIST = "virtplane-guestd"
WHEEL_DIST = "virtplane_guestd"
EXCLUDED_DIRS = frozenset({"packaging", "tests", "__pycache__"})
VALIDATION_IMPORT = "from google.protobuf import runtime_version as _runtime_version"
VALIDATION_CALL = "_runtime_version.ValidateProtobufRuntimeVersion("
GUEST_COPY_NOTE = (
    "# virtplane: guest copy; protoc's runtime version check is removed "
    "(guestd/packaging/build.py).\n"
)
GUEST_COMMON = ("__init__.py", "framing.py", "py.typed")
"""What guestd uses of virtplane_common: the frames, which need only the standard library."""
SOURCE_DATE_EPOCH = "1577836800"
"""2020-01-01: fixed timestamps inside the archives."""
DEB_MAINTAINER = "virtplane developers <dev@virtplane.invalid>"
DEB_DEPENDS = "python3 (>= 3.9), python3-protobuf (>= 3.20)"
CONFFILES = ("/etc/virtplane/guestd.conf",)
BIN_SCRIPT = """\
#!/usr/bin/python3
import sys

from guestd.__main__ import main

sys.exit(main())
"""
COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: virtplane
License: Apache-2.0

Files: *
Copyright: virtplane developers
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
"""


class BuildError(Exception):
    pass


@dataclass(frozen=True)
class Sources:
    guestd: Path
    """The agent package (normally the repository's guestd/)."""
    protos: Path
    """The folder holding virtplane/v1/guest_channel_pb2.py."""
    common: Path = REPO / "virtplane_common"
    """The shared runtime; the guest gets only GUEST_COMMON of it."""


def project_version(pyproject: Path = REPO / "pyproject.toml") -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
    if not match:
        raise BuildError(f"no version in {pyproject}")
    return match.group(1)


def strip_runtime_check(source: str) -> str:
    """The generated module without protoc's runtime version check (see the module docstring)."""
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == VALIDATION_IMPORT:
            i += 1
            continue
        if line.startswith(VALIDATION_CALL):
            end = i
            while end < len(lines) and lines[end].strip() != ")":
                end += 1
            if end == len(lines):
                raise BuildError("the runtime version check does not end with a ')' line")
            i = end + 1
            continue
        out.append(line)
        i += 1
    result = "".join(out)
    if "_runtime_version" in result:
        raise BuildError("the generated module still refers to _runtime_version")
    if re.search(r"^from virtplane", result, re.MULTILINE):
        raise BuildError("guest_channel_pb2 imports other virtplane modules; package them too")
    compile(result, "guest_channel_pb2.py", "exec")
    docstring_at = result.find('"""Generated protocol buffer code."""\n')
    if docstring_at < 0:
        return GUEST_COPY_NOTE + result
    at = docstring_at + len('"""Generated protocol buffer code."""\n')
    return result[:at] + GUEST_COPY_NOTE + result[at:]


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def stage(sources: Sources, dest: Path, version: str) -> None:
    """Writes the wheel's source tree to dest (emptied first)."""
    if not (sources.guestd / "__main__.py").is_file():
        raise BuildError(f"no agent: {sources.guestd}/__main__.py does not exist")
    pb2 = sources.protos / "virtplane/v1/guest_channel_pb2.py"
    if not pb2.is_file():
        raise BuildError(f"no {pb2} (generate the protobuf code first)")
    if dest.exists():
        shutil.rmtree(dest)
    for path in sorted(sources.guestd.rglob("*")):
        rel = path.relative_to(sources.guestd)
        if any(part in EXCLUDED_DIRS for part in rel.parts) or not path.is_file():
            continue
        if path.suffix == ".py" or path.name == "py.typed":
            _copy(path, dest / "guestd" / rel)
    for name in GUEST_COMMON:
        _copy(sources.common / name, dest / "virtplane_common" / name)
    for init in ("virtplane/__init__.py", "virtplane/v1/__init__.py"):
        (dest / init).parent.mkdir(parents=True, exist_ok=True)
        src = sources.protos / init
        (dest / init).write_bytes(src.read_bytes() if src.is_file() else b"")
    (dest / "virtplane/v1/guest_channel_pb2.py").write_text(strip_runtime_check(pb2.read_text()))
    readme = REPO / "guestd/README.md"
    (dest / "README.md").write_text(readme.read_text() if readme.is_file() else "guestd\n")
    pyproject = (HERE / "pyproject.toml.in").read_text().replace("@VERSION@", version)
    (dest / "pyproject.toml").write_text(pyproject)


def tree_key(*roots: Path, extra: str = "") -> str:
    """A digest of the files (names and contents) under roots."""
    digest = hashlib.sha256(extra.encode())
    for root in roots:
        files = (
            [root]
            if root.is_file()
            else sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        )
        for path in files:
            digest.update(str(path.relative_to(root.parent)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _up_to_date(target: Path, key_file: Path, key: str) -> bool:
    return target.is_file() and key_file.is_file() and key_file.read_text().strip() == key


def _run(argv: list[str], failure: str, cwd: Path | None = None) -> str:
    """Runs argv with SOURCE_DATE_EPOCH set; its stdout, or BuildError "failure:" and its output."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"{failure}:\n{done.stdout}{done.stderr}")
    return done.stdout


def build_wheel(sources: Sources, out: Path) -> Path:
    version = project_version()
    out.mkdir(parents=True, exist_ok=True)
    staged = out / "stage"
    stage(sources, staged, version)
    wheel = out / f"{WHEEL_DIST}-{version}-py3-none-any.whl"
    key_file = out / "wheel.key"
    key = tree_key(staged, extra=sys.version)
    if _up_to_date(wheel, key_file, key):
        return wheel
    key_file.unlink(missing_ok=True)
    dist = out / "dist.tmp"
    shutil.rmtree(dist, ignore_errors=True)
    dist.mkdir()
    # setuptools' own PEP 517 hook, in the staged tree: no pip, no network.
    code = "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))"
    out_text = _run(
        [sys.executable, "-c", code, str(dist.resolve())],
        "setuptools could not build the wheel",
        cwd=staged,
    )
    built = dist / out_text.strip().splitlines()[-1]
    os.replace(built, wheel)
    shutil.rmtree(dist)
    key_file.write_text(key + "\n")
    return wheel


def _normalise_modes(root: Path) -> None:
    """0755 for folders and executables, 0644 for the rest, whatever the umask."""
    for path in [root, *root.rglob("*")]:
        if path.is_dir() or (path.is_file() and path.stat().st_mode & 0o100):
            path.chmod(0o755)
        elif path.is_file():
            path.chmod(0o644)


def _deb_control(version: str, installed_kib: int) -> str:
    return (
        f"Package: {DIST}\n"
        f"Version: {version}\n"
        "Architecture: all\n"
        f"Maintainer: {DEB_MAINTAINER}\n"
        f"Installed-Size: {installed_kib}\n"
        f"Depends: {DEB_DEPENDS}\n"
        "Section: admin\n"
        "Priority: optional\n"
        "Description: virtplane guest agent\n"
        " guestd runs inside a virtual machine managed by virtplane and reports\n"
        " the guest's facts (hostname, OS, network addresses, installed packages,\n"
        " logged-in users, filesystem usage, time zone) to the host over the\n"
        " org.virtplane.guestd.0 virtio-serial port, and carries out the host's\n"
        " shutdown and reboot requests. It starts when the port appears.\n"
    )


def _write_control(root: Path, version: str) -> None:
    """DEBIAN/: the maintainer scripts, control, conffiles and md5sums of the tree at root."""
    control = root / "DEBIAN"
    control.mkdir()
    for script in ("postinst", "prerm", "postrm"):
        _copy(HERE / "debian" / script, control / script)
        (control / script).chmod(0o755)
    payload = sorted(p for p in root.rglob("*") if p.is_file() and control not in p.parents)
    installed_kib = sum((p.stat().st_size + 1023) // 1024 for p in payload)
    (control / "control").write_text(_deb_control(version, installed_kib))
    conffiles = [root / c.lstrip("/") for c in CONFFILES]
    (control / "conffiles").write_text("".join(c + "\n" for c in CONFFILES))
    (control / "md5sums").write_text(  # conffiles are left out, as dh_md5sums does
        "".join(
            f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(root)}\n"
            for p in payload
            if p not in conffiles
        )
    )


def build_deb(sources: Sources, out: Path) -> Path:
    if not shutil.which("dpkg-deb"):
        raise BuildError("dpkg-deb is required to build the .deb")
    wheel = build_wheel(sources, out)
    version = project_version()
    deb = out / f"{DIST}_{version}_all.deb"
    key_file = out / "deb.key"
    key = tree_key(wheel, HERE, REPO / "guestd/README.md")
    if _up_to_date(deb, key_file, key):
        return deb
    key_file.unlink(missing_ok=True)
    root = out / "deb-root"
    shutil.rmtree(root, ignore_errors=True)
    site = root / "usr/lib/python3/dist-packages"
    site.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    for record in site.glob("*.dist-info/RECORD"):
        record.unlink()
    for installer in site.glob("*.dist-info"):
        (installer / "INSTALLER").write_text("dpkg\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin" / DIST).write_text(BIN_SCRIPT)
    (root / "usr/bin" / DIST).chmod(0o755)
    _copy(HERE / "virtplane-guestd.service", root / "lib/systemd/system/virtplane-guestd.service")
    _copy(HERE / "60-virtplane-guestd.rules", root / "lib/udev/rules.d/60-virtplane-guestd.rules")
    _copy(HERE / "guestd.conf", root / "etc/virtplane/guestd.conf")
    doc = root / "usr/share/doc" / DIST
    _copy(REPO / "guestd/README.md", doc / "README.md")
    (doc / "copyright").write_text(COPYRIGHT)
    _write_control(root, version)
    _normalise_modes(root)
    tmp = out / (deb.name + ".tmp")
    _run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(tmp)],
        "dpkg-deb failed",
    )
    os.replace(tmp, deb)
    key_file.write_text(key + "\n")
    return deb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Builds the guestd wheel or .deb.")
    parser.add_argument("what", choices=("wheel", "deb"))
    parser.add_argument("--out", type=Path, default=REPO / "build/guestd")
    parser.add_argument("--guestd-src", type=Path, default=REPO / "guestd")
    parser.add_argument("--protos", type=Path, default=REPO / "protos")
    args = parser.parse_args(argv)
    sources = Sources(guestd=args.guestd_src.resolve(), protos=args.protos.resolve())
    try:
        built = (build_wheel if args.what == "wheel" else build_deb)(sources, args.out.resolve())
    except (BuildError, OSError) as exc:
        print(f"guestd packaging: {exc}", file=sys.stderr)
        return 1
    print(built)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
