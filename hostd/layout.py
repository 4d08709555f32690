"""Where hostd keeps per-VM files under its state directory, and making them reachable.

QEMU runs as an unprivileged user (libvirt-qemu on Debian), so every
directory on the way to a console log or channel socket must be searchable
by others: the state directories are created 0711 (traverse, not list).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from virtplane_common.errors import InvalidArgument

STATE_DIR_MODE = 0o711
SAVED_DIR_MODE = 0o700
"""Saved memory images are the guests' secrets: libvirt (root) alone reaches them."""
UNIX_PATH_MAX = 107
"""sun_path holds 108 bytes including the terminating NUL."""
_UUID_LEN = 36


@dataclass(frozen=True)
class StateLayout:
    root: Path

    @property
    def channels_dir(self) -> Path:
        return self.root / "channels"

    @property
    def consoles_dir(self) -> Path:
        return self.root / "consoles"

    @property
    def saved_dir(self) -> Path:
        """Hibernated VMs: their memory images and the configurations beside them."""
        return self.root / "saved"

    def channel_socket(self, vm_id: str) -> Path:
        """The unix socket libvirt binds for the VM's guest channel."""
        return self.channels_dir / f"{vm_id}.sock"

    def console_log(self, vm_id: str) -> Path:
        """The file the VM's serial console is written to."""
        return self.consoles_dir / f"{vm_id}.log"

    def check(self) -> None:
        """Refuses a root too long for the channel sockets' paths."""
        longest = len(os.fsencode(self.channels_dir)) + len(f"/{'0' * _UUID_LEN}.sock")
        if not self.root.is_absolute():
            raise InvalidArgument("state_dir", f"{self.root} is not an absolute path")
        if longest > UNIX_PATH_MAX:
            raise InvalidArgument(
                "state_dir",
                f"{self.root} is too long: channel socket paths would be {longest} bytes, "
                f"more than the {UNIX_PATH_MAX} a unix socket allows",
            )

    def prepare(self) -> list[Path]:
        """Creates the directories; returns ancestors that others cannot traverse.

        A non-empty result means QEMU, running as another user, may fail to
        reach files under the root.
        """
        self.check()
        for path in (self.root, self.channels_dir, self.consoles_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(STATE_DIR_MODE)
        self.saved_dir.mkdir(exist_ok=True)
        self.saved_dir.chmod(SAVED_DIR_MODE)
        return [p for p in self.root.parents if not _others_can_search(p)]


def _others_can_search(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IXOTH)
