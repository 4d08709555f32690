from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from guestd import users
from guestd.users import User
from tests.guestd.fakeroot import DEAD_PROCESS, USER_PROCESS, FakeRoot, utmp_record


def test_record_layout_is_glibcs():
    assert users.UTMP_RECORD.size == 384


def test_parse_keeps_user_processes_only():
    data = (
        utmp_record(2, 0, "~", "reboot")  # BOOT_TIME
        + utmp_record(USER_PROCESS, 100, "pts/0", "alice", "10.0.0.7", seconds=1_767_323_045)
        + utmp_record(DEAD_PROCESS, 101, "pts/1", "bob")
        + utmp_record(USER_PROCESS, 102, "ttyS0", "root")
        + b"\x07\x00 a torn record at the end"
    )
    assert users.parse_utmp(data) == [
        (User("alice", "pts/0", "10.0.0.7", 1_767_323_045), 100),
        (User("root", "ttyS0", "", 0), 102),
    ]


def test_fields_filling_the_whole_width_and_bad_utf8():
    record = bytearray(utmp_record(USER_PROCESS, 5, "p" * 32, "u" * 32))
    host_offset = 76
    record[host_offset : host_offset + 2] = b"h\xe9"
    [(user, pid)] = users.parse_utmp(bytes(record))
    assert (user.name, user.terminal, user.host, pid) == ("u" * 32, "p" * 32, "h\ufffd", 5)


@pytest.mark.skipif(not shutil.which("utmpdump"), reason="util-linux's utmpdump is not installed")
def test_reads_what_util_linux_writes(tmp_path: Path):
    """utmpdump -r turns text into records with its own idea of the layout: they must agree."""
    text = (
        "[7] [12345] [ts/0] [alice   ] [pts/0       ] [10.0.0.7            ] "
        "[10.0.0.7       ] [2026-01-02T03:04:05,000000+00:00]\n"
        "[8] [00999] [tty1] [bob     ] [tty1        ] [                    ] "
        "[0.0.0.0        ] [2026-01-02T03:04:05,000000+00:00]\n"
    )
    done = subprocess.run(["utmpdump", "-r"], input=text.encode(), capture_output=True, check=True)
    assert users.parse_utmp(done.stdout) == [
        (User("alice", "pts/0", "10.0.0.7", 1_767_323_045), 12345)
    ]


def test_logged_in_drops_logins_whose_process_is_gone(tmp_path: Path):
    root = FakeRoot(tmp_path)
    root.set_logins([(300, "pts/3", "carol", "", 20), (200, "tty1", "bob", "", 10)])
    stale = utmp_record(USER_PROCESS, 999_999, "pts/9", "ghost")
    root.write_bytes("run/utmp", (tmp_path / "run/utmp").read_bytes() + stale)
    assert users.logged_in(tmp_path) == [
        User("bob", "tty1", "", 10),
        User("carol", "pts/3", "", 20),
    ]


def test_var_run_utmp_is_the_fallback(tmp_path: Path):
    root = FakeRoot(tmp_path)
    (tmp_path / "proc/7").mkdir(parents=True)
    root.write_bytes("var/run/utmp", utmp_record(USER_PROCESS, 7, "tty2", "dave"))
    assert [u.name for u in users.logged_in(tmp_path)] == ["dave"]


def test_no_utmp(tmp_path: Path):
    assert users.logged_in(tmp_path) == []


def test_users_are_capped(tmp_path: Path):
    root = FakeRoot(tmp_path)
    root.set_logins([(1000 + i, f"pts/{i}", f"u{i:04}", "", 0) for i in range(150)])
    found = users.logged_in(tmp_path)
    assert len(found) == users.MAX_USERS
    assert found == sorted(found)


@pytest.mark.parametrize(
    ("terminal", "ok"),
    [("pts/0", True), ("ttyS0", True), ("../etc/passwd", False), ("/dev/sda", False),
     ("pts/../../x", False), ("", False), ("pts//0", False)],
)  # fmt: skip
def test_terminal_paths_stay_under_dev(terminal: str, ok: bool):
    path = users.terminal_path(Path("/r"), terminal)
    assert (path == Path("/r/dev") / terminal) if ok else path is None


def test_clean_message_removes_control_characters():
    assert users.clean_message("hi\x1b[2J\x07 there\n") == "hi [2J  there "
    assert len(users.clean_message("x" * 5000)) == users.MAX_MESSAGE


def test_broadcast_reaches_console_and_each_terminal_once(tmp_path: Path):
    root = FakeRoot(tmp_path)
    root.set_logins([(10, "pts/0", "alice", "", 0), (11, "pts/0", "alice", "x", 1)])
    for rel in ("dev/console", "dev/pts/0"):
        root.write(rel, "")
    assert users.broadcast(tmp_path, "hello\r\n") == 2
    assert (tmp_path / "dev/console").read_bytes() == b"hello\r\n"
    assert (tmp_path / "dev/pts/0").read_bytes() == b"hello\r\n"


def test_broadcast_skips_what_cannot_be_opened(tmp_path: Path):
    root = FakeRoot(tmp_path)
    root.set_logins([(10, "pts/4", "alice", "", 0)])
    os.mkfifo(tmp_path / "dev-fifo")
    (tmp_path / "dev").mkdir()
    os.rename(tmp_path / "dev-fifo", tmp_path / "dev/console")
    # A FIFO nobody reads: opening it without blocking fails, and nothing waits.
    assert users.broadcast(tmp_path, "x") == 0


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    main, replica = os.openpty()
    try:
        yield main, os.ttyname(replica)
    finally:
        os.close(main)
        os.close(replica)


def test_writes_to_a_real_terminal(pty: tuple[int, str]):
    main, name = pty
    assert users.write_without_waiting(Path(name), b"shutting down")
    assert os.read(main, 100) == b"shutting down"


def test_a_terminal_that_does_not_read_is_not_waited_for(pty: tuple[int, str]):
    _, name = pty
    results = [users.write_without_waiting(Path(name), b"x" * 4096) for _ in range(200)]
    # The terminal's buffer fills up; from then on the writes give up at once.
    assert results[0]
    assert not results[-1]


def test_write_errors_other_than_full_are_false(tmp_path: Path):
    assert not users.write_without_waiting(tmp_path / "missing", b"x")
    assert not users.write_without_waiting(Path("/dev/full"), b"x")  # ENOSPC
