"""libvirt for the tests: looking at and removing domains, disk images and
their XML, hosts simulated by libvirt's test driver, and a second privileged
libvirtd to migrate to."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path

import libvirt

from hostd.builder import DOMAIN_NAME_PREFIX
from tests.support.real import REPO, skip_or_fail

SECOND_LIBVIRTD = REPO / "tools" / "second-libvirtd.sh"


def domain_exists(uri: str, vm_id: str) -> bool:
    """Whether libvirt at uri has a domain with this UUID."""
    conn = libvirt.open(uri)
    try:
        conn.lookupByUUIDString(vm_id)
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def live_xml(uri: str, vm_id: str) -> str:
    """libvirt's XML of the running domain vm_id."""
    conn = libvirt.open(uri)
    try:
        return str(conn.lookupByUUIDString(vm_id).XMLDesc())
    finally:
        conn.close()


def remove_domains(uri: str, vm_ids: Iterable[str], *, undefine: bool = True) -> None:
    """Destroys (and with undefine, undefines) the domains of these VM ids that
    libvirt at uri still has: a test's clean-up, whatever hostd left."""
    conn = libvirt.open(uri)
    try:
        for vm_id in vm_ids:
            try:
                dom = conn.lookupByUUIDString(vm_id)
            except libvirt.libvirtError:
                continue
            for step in (dom.destroy, dom.undefine) if undefine else (dom.destroy,):
                with contextlib.suppress(libvirt.libvirtError):
                    step()
    finally:
        conn.close()


def disk_image(path: Path, fmt: str, size_mib: int = 8) -> str:
    """Makes an empty disk image at path, raw (a sparse file) or qcow2 (by
    qemu-img, from qemu-utils); returns its path. QEMU runs as another user:
    path's folders must be searchable by others."""
    if fmt == "raw":
        subprocess.run(["truncate", "-s", f"{size_mib}M", str(path)], check=True)
        return str(path)
    if shutil.which("qemu-img") is None:
        skip_or_fail("qemu-img is not installed (qemu-utils); run `make setup`")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", fmt, str(path), f"{size_mib}M"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return str(path)


def disks_of(xml: str) -> list[tuple[str, str, str, bool]]:
    """(format, image, target, read-only) of each file disk in a domain's XML."""
    found = []
    for disk in ET.fromstring(xml).iterfind("devices/disk[@type='file']"):
        driver, source, target = disk.find("driver"), disk.find("source"), disk.find("target")
        assert driver is not None and source is not None and target is not None, xml
        found.append(
            (
                driver.get("type", ""),
                source.get("file", ""),
                target.get("dev", ""),
                disk.find("readonly") is not None,
            )
        )
    return found


def node_xml(path: Path, *, memory_mib: int = 8192, cpus: int = 8, clash: str = "") -> str:
    """Writes a libvirt test-driver host description and returns its URI: an
    independent in-memory host with the memory and CPUs given. With clash, a
    domain of that VM's name is defined there already, so that libvirt
    refuses to start the VM."""
    domain = ""
    if clash:
        domain = f"""
  <domain type="test">
    <name>{DOMAIN_NAME_PREFIX}{clash}</name>
    <uuid>{uuid.uuid4()}</uuid>
    <memory>65536</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
  </domain>"""
    path.write_text(
        f"""<node>
  <cpu>
    <mhz>2000</mhz><model>x86_64</model><active>{cpus}</active>
    <nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores><threads>1</threads>
  </cpu>
  <memory>{memory_mib * 1024}</memory>{domain}
</node>
"""
    )
    return f"test://{path}"


class SecondLibvirtdError(RuntimeError):
    """tools/second-libvirtd.sh could not start a second libvirtd."""


@contextlib.contextmanager
def second_libvirtd() -> Iterator[str]:
    """The URI of a second privileged libvirtd on this machine, a second host
    to migrate to (tools/second-libvirtd.sh; hostd/README.md, "Two hosts on one
    machine"); at the end every domain on it is destroyed and it is stopped.
    Raises SecondLibvirtdError, with the script's reason, when it cannot start."""
    directory = Path(tempfile.mkdtemp(prefix="vp-l2-", dir="/tmp"))
    try:
        started = _script("start", directory)
        if started.returncode != 0:
            raise SecondLibvirtdError(
                f"cannot start a second libvirtd: {started.stderr.strip() or 'no reason'}"
            )
        yield started.stdout.strip().splitlines()[-1]
    finally:
        _script("stop", directory)
        shutil.rmtree(directory, ignore_errors=True)


def _script(verb: str, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SECOND_LIBVIRTD), verb, str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


SYSTEM_SOCKETS = (Path("/run/libvirt/virtqemud-sock"), Path("/run/libvirt/libvirt-sock"))
"""Where qemu:///system answers: the modular daemon's socket, or libvirtd's."""


def libvirt_socket(uri: str) -> Path:
    """The unix socket a local libvirt URI connects to."""
    if "?socket=" in uri:
        return Path(uri.split("?socket=", 1)[1].split("&", 1)[0])
    found = next((path for path in SYSTEM_SOCKETS if path.exists()), None)
    if found is None:
        raise FileNotFoundError(f"no socket of {uri} in {', '.join(map(str, SYSTEM_SOCKETS))}")
    return found


def peer_uri_template(folder: Path, uris: dict[str, str]) -> str:
    """A --peer-hypervisor-uri for hosts on one machine: each host id's
    libvirt (uris: host id -> its local URI) answers at folder/<id>.sock, a
    link to its socket, and the template names that path by {host_id}."""
    folder.mkdir(parents=True, exist_ok=True)
    for host_id, uri in uris.items():
        link = folder / f"{host_id}.sock"
        link.unlink(missing_ok=True)
        link.symlink_to(libvirt_socket(uri))
    return f"qemu+unix:///system?socket={folder}/{{host_id}}.sock"
