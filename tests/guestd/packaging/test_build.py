"""The wheel and the .deb, built and run the way guests run them.

The wheel goes into venvs kept under build/guestd/test-venvs (made once, with
the oldest protobuf runtimes guests bring); the .deb is unpacked and run on
Debian's own python3 with Debian's python3-protobuf. Each agent runs as a
process on one end of a socket pair (--fd) and must negotiate and send a full
report. No power command is ever sent to these agents: they act on this machine.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from virtplane.v1 import guest_channel_pb2 as gc

from guestd.packaging import build
from guestd.report import Reporter
from tests.guestd.fakehost import FakeHost
from tests.guestd.fakeroot import FakeRoot
from tests.support.real import skip_or_fail

REPO = Path(__file__).resolve().parents[3]
VENVS = REPO / "build/guestd/test-venvs"
GUARD = 60.0
DEBIAN_PYTHON = Path("/usr/bin/python3")
PB2 = REPO / "protos/virtplane/v1/guest_channel_pb2.py"
SOURCES = build.Sources(guestd=REPO / "guestd", protos=REPO / "protos")
VERSION = build.project_version()
PIP_INSTALL = ("install", "-q", "--disable-pip-version-check")


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, env=env)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guestd-dist")


@pytest.fixture(scope="module")
def wheel(out: Path) -> Path:
    return build.build_wheel(SOURCES, out)


@pytest.fixture(scope="module")
def deb(out: Path) -> Path:
    return build.build_deb(SOURCES, out)


# ------------------------------------------------------------------ the build


def test_the_guest_copy_of_the_generated_module_has_no_runtime_check():
    text = build.strip_runtime_check(PB2.read_text())
    assert "_runtime_version" not in text and "runtime_version" not in text
    assert "ValidateProtobufRuntimeVersion" in PB2.read_text()
    assert text.count("\n") < PB2.read_text().count("\n")
    assert "_builder.BuildTopDescriptorsAndMessages" in text
    compile(text, "guest_channel_pb2.py", "exec")


def test_strip_leaves_older_gencode_alone_and_refuses_surprises():
    old = '"""Generated protocol buffer code."""\nfrom google.protobuf import descriptor\n'
    assert build.strip_runtime_check(old).endswith("from google.protobuf import descriptor\n")
    with pytest.raises(build.BuildError):
        build.strip_runtime_check("_runtime_version.ValidateProtobufRuntimeVersion(\n  7,\n")
    with pytest.raises(build.BuildError):
        build.strip_runtime_check("x = _runtime_version.Domain\n")
    with pytest.raises(build.BuildError):
        build.strip_runtime_check("from virtplane.v1 import vm_pb2 as vm\n")


def test_wheel_contents(wheel: Path):
    assert wheel.name == f"virtplane_guestd-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"virtplane_guestd-{VERSION}.dist-info/METADATA").decode()
        entry_points = archive.read(f"virtplane_guestd-{VERSION}.dist-info/entry_points.txt")
        pb2 = archive.read("virtplane/v1/guest_channel_pb2.py").decode()
    modules = {f"guestd/{p.name}" for p in (REPO / "guestd").glob("*.py")}
    assert modules | {"guestd/py.typed", "virtplane/__init__.py", "virtplane/v1/__init__.py"} <= (
        names
    )
    assert "virtplane/v1/guest_channel_pb2.py" in names
    assert not {n for n in names if "image" in n or "packaging" in n or "tests" in n}
    assert not {n for n in names if n.endswith(".pyc") or "vm_pb2" in n}
    assert "Requires-Python: >=3.9" in metadata
    assert "Requires-Dist: protobuf>=3.20" in metadata
    assert b"virtplane-guestd = guestd.__main__:main" in entry_points
    assert "_runtime_version" not in pb2


def test_a_second_build_is_taken_from_the_cache(wheel: Path, out: Path):
    before = wheel.stat().st_mtime_ns
    assert build.build_wheel(SOURCES, out) == wheel
    assert wheel.stat().st_mtime_ns == before


# ------------------------------------------------------------ running agents


@dataclass
class Conversation:
    hello: gc.GuestMessage
    report: gc.GuestReport
    report_bytes: int
    stderr: str


def converse(argv: Sequence[str], env: dict[str, str], root: Path | None) -> Conversation:
    """Runs the agent on a socket pair: hello, version choice, full report, SIGTERM."""
    host_sock, guest_sock = socket.socketpair()
    with host_sock, guest_sock:
        args = [*argv, "--fd", str(guest_sock.fileno()), "--heartbeat-interval", "3600"]
        args += ["--config", "/nonexistent/guestd.conf"]
        if root is not None:
            args += ["--root", str(root)]
        agent = subprocess.Popen(
            args, pass_fds=[guest_sock.fileno()], env=env, stderr=subprocess.PIPE, cwd="/"
        )
        try:
            guest_sock.close()
            host = FakeHost(host_sock)
            host.sock.settimeout(GUARD)
            hello = host.expect("hello")
            host.send(gc.HostMessage(version_choice=gc.VersionChoice(version=1)))
            message = host.expect("report")
            agent.send_signal(signal.SIGTERM)
            _, err = agent.communicate(timeout=GUARD)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    assert agent.returncode == 0, err.decode()
    assert message.report.full
    return Conversation(hello, message.report, message.ByteSize(), err.decode())


def clean_env(**extra: str) -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **extra}


def assert_reports_the_fake_root(conversation: Conversation, fake_root: FakeRoot) -> None:
    """Same content, same hashes as this repository's agent on this repository's protobuf."""
    assert conversation.hello.hello.agent_version == VERSION
    expected = Reporter(fake_root.path).full()
    assert conversation.report == expected
    assert conversation.report.system.fqdn == "guest-1.example.org"


def assert_reports_this_machine(conversation: Conversation) -> None:
    report = conversation.report
    assert report.system.hostname == socket.gethostname()
    assert report.system.memory_total_kib > 0
    assert report.filesystems.filesystems[0].mount_point == "/"
    assert report.os.kernel_release == os.uname().release


def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def agent_venv(python: Path, protobuf: str) -> Path:
    """A venv of python with protobuf==<protobuf> from the registry, made once."""
    venv = VENVS / f"{python.name}-protobuf-{protobuf}"
    for _ in _locked(VENVS / ".lock"):
        if (venv / ".ready").is_file():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([str(python), "-m", "venv", str(venv)], check=True, capture_output=True)
        done = run(str(venv / "bin/pip"), *PIP_INSTALL, f"protobuf=={protobuf}")
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            skip_or_fail(f"cannot install protobuf=={protobuf} from the registry:\n{done.stderr}")
        (venv / ".ready").write_text(protobuf + "\n")
    return venv


def install(venv: Path, wheel: Path) -> None:
    pip = str(venv / "bin/pip")
    done = run(pip, *PIP_INSTALL, "--no-deps", "--no-index", "--force-reinstall", str(wheel))
    assert done.returncode == 0, done.stderr


PYTHON_3_9 = Path("/root/.pyenv/versions/3.9.18/bin/python3.9")


@pytest.mark.parametrize(
    ("python", "protobuf"),
    [
        pytest.param(DEBIAN_PYTHON, "4.21.12", id="py3.11-protobuf4.21.12"),
        pytest.param(PYTHON_3_9, "3.20.3", id="py3.9-protobuf3.20.3"),
    ],
)
def test_the_wheel_on_old_protobuf(wheel: Path, fake_root: FakeRoot, python: Path, protobuf: str):
    if not python.is_file():
        pytest.skip(f"{python} is not on this machine")
    venv = agent_venv(python, protobuf)
    install(venv, wheel)
    agent = [str(venv / "bin/virtplane-guestd")]
    for implementation in ("", "python"):
        env = clean_env(PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=implementation)
        if not implementation:
            del env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"]
        assert_reports_the_fake_root(converse(agent, env, fake_root.path), fake_root)
    assert_reports_this_machine(converse(agent, clean_env(), None))


# ------------------------------------------------------------------ the .deb


def deb_field(deb: Path, name: str) -> str:
    return run("dpkg-deb", "-f", str(deb), name).stdout.strip()


def test_deb_control(deb: Path):
    assert deb.name == f"virtplane-guestd_{VERSION}_all.deb"
    assert deb_field(deb, "Package") == "virtplane-guestd"
    assert deb_field(deb, "Version") == VERSION
    assert deb_field(deb, "Architecture") == "all"
    assert deb_field(deb, "Depends") == "python3 (>= 3.9), python3-protobuf (>= 3.20)"
    info = run("dpkg-deb", "-I", str(deb)).stdout
    for member in ("conffiles", "postinst", "prerm", "postrm", "md5sums"):
        assert member in info


def test_deb_contents(deb: Path):
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    entries = {line.split()[-1].lstrip("."): line.split()[0] for line in listing.splitlines()}
    site = "/usr/lib/python3/dist-packages"
    for path in (
        "/usr/bin/virtplane-guestd",
        "/lib/systemd/system/virtplane-guestd.service",
        "/lib/udev/rules.d/60-virtplane-guestd.rules",
        "/etc/virtplane/guestd.conf",
        "/usr/share/doc/virtplane-guestd/README.md",
        f"{site}/guestd/agent.py",
        f"{site}/virtplane/v1/guest_channel_pb2.py",
        f"{site}/virtplane_guestd-{VERSION}.dist-info/METADATA",
    ):
        assert path in entries, path
    assert entries["/usr/bin/virtplane-guestd"] == "-rwxr-xr-x"
    assert entries["/etc/virtplane/guestd.conf"] == "-rw-r--r--"
    assert f"{site}/virtplane_guestd-{VERSION}.dist-info/RECORD" not in entries
    assert not [p for p in entries if "__pycache__" in p or "/image/" in p]
    assert all(line.split()[1] == "root/root" for line in listing.splitlines())


@pytest.fixture(scope="module")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deb-root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    control = root / "DEBIAN"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    return root


def test_deb_unit_rule_and_scripts(unpacked: Path):
    unit = (unpacked / "lib/systemd/system/virtplane-guestd.service").read_text()
    device = "dev-virtio\\x2dports-org.virtplane.guestd.0.device"
    assert f"BindsTo={device}" in unit and f"After={device}" in unit
    assert "Restart=always" in unit and "ExecStart=/usr/bin/virtplane-guestd" in unit
    rule = (unpacked / "lib/udev/rules.d/60-virtplane-guestd.rules").read_text()
    assert 'ATTR{name}=="org.virtplane.guestd.0"' in rule
    assert 'TAG+="systemd"' in rule and 'ENV{SYSTEMD_WANTS}="virtplane-guestd.service"' in rule
    assert (unpacked / "DEBIAN/conffiles").read_text() == "/etc/virtplane/guestd.conf\n"
    for script in ("postinst", "prerm", "postrm"):
        subprocess.run(["sh", "-n", str(unpacked / "DEBIAN" / script)], check=True)
    md5sums = (unpacked / "DEBIAN/md5sums").read_text()
    assert "  usr/bin/virtplane-guestd\n" in md5sums
    assert "etc/virtplane/guestd.conf" not in md5sums  # a conffile: dpkg keeps its hash apart


def test_the_unit_passes_systemd_analyze(unpacked: Path, tmp_path: Path):
    if not shutil.which("systemd-analyze") or not Path("/lib/systemd/system").is_dir():
        pytest.skip("no systemd-analyze or no systemd units on this machine")
    root = tmp_path / "root"
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True)
    unit = "lib/systemd/system/virtplane-guestd.service"
    shutil.copy(unpacked / unit, root / unit)
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy(unpacked / "usr/bin/virtplane-guestd", root / "usr/bin")
    done = run("systemd-analyze", "verify", f"--root={root}", "virtplane-guestd.service")
    assert done.returncode == 0, done.stderr


def debian_protobuf() -> None:
    """Debian's python3-protobuf, the package's dependency: installed with apt when missing."""
    if run(str(DEBIAN_PYTHON), "-c", "import google.protobuf", env=clean_env()).returncode == 0:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        skip_or_fail("python3-protobuf is not installed (apt-get install python3-protobuf)")
    apt = ("apt-get", "install", "-y", "-q", "python3-protobuf")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if run(*apt, env=env).returncode != 0:
        run("apt-get", "update", "-q", env=env)
        done = run(*apt, env=env)
        if done.returncode != 0:
            skip_or_fail(f"apt-get install python3-protobuf failed:\n{done.stderr}")


def test_the_deb_runs_on_debians_python(unpacked: Path, fake_root: FakeRoot):
    if not DEBIAN_PYTHON.is_file():
        pytest.skip("not a Debian machine: no /usr/bin/python3")
    debian_protobuf()
    env = clean_env(PYTHONPATH=str(unpacked / "usr/lib/python3/dist-packages"))
    agent = [str(DEBIAN_PYTHON), str(unpacked / "usr/bin/virtplane-guestd")]
    assert_reports_the_fake_root(converse(agent, env, fake_root.path), fake_root)
    assert_reports_this_machine(converse(agent, env, None))
