"""Who is logged in, from the utmp file, and telling them something on their terminals.

utmp (/run/utmp, or /var/run/utmp) is an array of glibc's 384-byte
``struct utmp`` records in the machine's byte order. A login is a
USER_PROCESS record; one whose process no longer exists under /proc (a
session that ended without its record being cleared) is left out. No ``who``
or other program is run.

Messages go to each logged-in terminal and to /dev/console, opened with
O_NONBLOCK | O_NOCTTY: a terminal that does not take the bytes at once is
skipped, never waited for.

Runs inside guests: standard library only, Python >= 3.9.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

UTMP_PATHS = ("run/utmp", "var/run/utmp")
USER_PROCESS = 7
UTMP_RECORD = struct.Struct("=h2xi32s4s32s256s4xi8s16x20x")
"""ut_type, ut_pid, ut_line, ut_id, ut_user, ut_host, (ut_exit), ut_session,
ut_tv (two 32-bit fields, also on 64-bit machines), (ut_addr_v6, reserved)."""
TIMEVAL32 = struct.Struct("=iI")
MAX_UTMP_BYTES = 4096 * UTMP_RECORD.size
MAX_USERS = 100
MAX_MESSAGE = 1000
"""Characters of a message written to terminals."""


@dataclass(frozen=True, order=True)
class User:
    name: str
    terminal: str
    host: str
    login_unix_seconds: int


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()


def parse_utmp(data: bytes) -> list[tuple[User, int]]:
    """(user, pid) of each USER_PROCESS record, in file order."""
    found: list[tuple[User, int]] = []
    usable = len(data) - len(data) % UTMP_RECORD.size
    for fields in UTMP_RECORD.iter_unpack(data[:usable]):
        kind, pid, line, _, user, host, _, tv = fields
        name = _text(user)
        if kind != USER_PROCESS or not name:
            continue
        seconds, _ = TIMEVAL32.unpack(tv)
        found.append((User(name, _text(line), _text(host), seconds), pid))
    return found


def read_utmp(root: Path) -> bytes:
    for rel in UTMP_PATHS:
        try:
            with (root / rel).open("rb") as f:
                return f.read(MAX_UTMP_BYTES)
        except OSError:
            continue
    return b""


def logged_in(root: Path) -> list[User]:
    """The logins whose process is alive, sorted, at most MAX_USERS."""
    users = {
        user
        for user, pid in parse_utmp(read_utmp(root))
        if pid <= 0 or (root / "proc" / str(pid)).exists()
    }
    return sorted(users)[:MAX_USERS]


def terminal_path(root: Path, terminal: str) -> Path | None:
    """/dev/<terminal> for a utmp line such as "pts/0"; None for anything else."""
    parts = terminal.split("/")
    if not terminal or terminal.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    return root / "dev" / terminal


def clean_message(text: str) -> str:
    """The message without control characters (escape sequences included), capped."""
    kept = "".join(c if c.isprintable() else " " for c in text)
    return kept[:MAX_MESSAGE]


def broadcast(root: Path, text: str, users: Iterable[User] | None = None) -> int:
    """Writes text to /dev/console and each logged-in user's terminal; how many took it."""
    targets = [root / "dev/console"]
    for user in logged_in(root) if users is None else users:
        path = terminal_path(root, user.terminal)
        if path is not None and path not in targets:
            targets.append(path)
    data = text.encode("utf-8", errors="replace")
    return sum(1 for path in targets if write_without_waiting(path, data))


def write_without_waiting(path: Path, data: bytes) -> bool:
    """Writes data to a terminal if it takes it at once; False otherwise."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        log.debug("cannot open %s: %s", path, exc)
        return False
    try:
        return os.write(fd, data) > 0
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EIO):
            log.debug("cannot write to %s: %s", path, exc)
        return False
    finally:
        os.close(fd)
