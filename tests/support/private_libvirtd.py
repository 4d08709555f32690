"""A libvirtd of the tests' own, that they may stop and start under a running hostd.

The machine's libvirtd serves every test at once and must never be
restarted by one. This one runs in a private mount namespace (unshare -m)
where folders of its own are bind-mounted over /etc/libvirt, /run/libvirt,
/var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt, with its own
virtlogd (which also keeps the namespace alive while libvirtd is stopped:
a restarted libvirtd joins it with nsenter) and its own host_uuid. Its QEMU
processes get no cgroups, so they cannot clash with the machine's
libvirtd's. Reach it as qemu+unix:///system?socket=DIR/run/libvirt-sock.
Needs root.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from pathlib import Path

import libvirt
import pytest

from tests.support.waiting import until_sync

_MOUNTS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
}
READY_SECONDS = 60.0


class PrivateLibvirtd:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.uri = f"qemu+unix:///system?socket={directory}/run/libvirt-sock"

    @staticmethod
    def usable() -> str | None:
        """Why this machine cannot run one; None when it can."""
        if os.geteuid() != 0:
            return "a private libvirtd needs root"
        for tool in ("/usr/bin/unshare", "/usr/bin/nsenter", "/usr/sbin/libvirtd"):
            if not Path(tool).exists():
                return f"a private libvirtd needs {tool}"
        return None

    def start(self) -> None:
        """Starts virtlogd and libvirtd in a new mount namespace."""
        for name in _MOUNTS:
            (self.dir / name).mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        etc = self.dir / "etc"
        (etc / "libvirtd.conf").write_text(f'host_uuid = "{uuid.uuid4()}"\n')
        (etc / "qemu.conf").write_text("cgroup_controllers = [ ]\n")
        (etc / "virtlogd.conf").write_text("")
        mounts = "\n".join(f'mount --bind "$1/{name}" {target}' for name, target in _MOUNTS.items())
        script = f"""{mounts}
virtlogd -d -p "$1/virtlogd.pid"
libvirtd -d -p "$1/libvirtd.pid"
"""
        subprocess.run(
            ["unshare", "-m", "--propagation", "private", "--", "/bin/sh", "-e", "-c", script,
             "private-libvirtd", str(self.dir)],
            check=True,
        )  # fmt: skip
        self._wait_ready()

    def stop_libvirtd(self) -> None:
        """Stops libvirtd alone (SIGTERM); its QEMU processes run on."""
        pid = self._pid("libvirtd")
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid)

    def start_libvirtd(self) -> None:
        """Starts libvirtd again in the namespace virtlogd keeps; it finds its QEMUs again."""
        keeper = self._pid("virtlogd")
        if keeper is None:
            raise RuntimeError("the private virtlogd is gone: the namespace with it")
        subprocess.run(
            ["nsenter", "-t", str(keeper), "-m", "--",
             "libvirtd", "-d", "-p", str(self.dir / "libvirtd.pid")],
            check=True,
        )  # fmt: skip
        self._wait_ready()

    def qemu_pid(self, domain_name: str) -> int:
        """The pid of a running domain's QEMU."""
        return int((self.dir / "run" / "qemu" / f"{domain_name}.pid").read_text().strip())

    def stop(self) -> None:
        """Destroys whatever domains it still has (all the tests'), then stops both daemons."""
        if self._pid("libvirtd") is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn = libvirt.open(self.uri)
                try:
                    for dom in conn.listAllDomains(0):
                        for step in (dom.destroy, dom.undefine):
                            with contextlib.suppress(libvirt.libvirtError):
                                step()
                finally:
                    conn.close()
        for name in ("libvirtd", "virtlogd"):
            pid = self._pid(name)
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                if not _wait_gone(pid, 10.0):
                    os.kill(pid, signal.SIGKILL)

    def _pid(self, name: str) -> int | None:
        try:
            pid = int((self.dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _answers(self) -> bool:
        try:
            libvirt.open(self.uri).close()
        except libvirt.libvirtError:
            return False
        return True

    def _wait_ready(self) -> None:
        until_sync(
            self._answers,
            what=f"the private libvirtd to answer at {self.uri}",
            within=READY_SECONDS,
            every=0.1,
        )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pid: int, within: float = 60.0) -> bool:
    """Whether process pid ended within `within` seconds."""
    try:
        until_sync(lambda: not _alive(pid), what=f"process {pid} to end", within=within, every=0.05)
    except pytest.fail.Exception:
        return False
    return True
