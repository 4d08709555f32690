"""Power actions with the action and the timer faked: nothing here powers anything off."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from guestd import power
from guestd.power import POWEROFF, REBOOT, PowerError, PowerScheduler
from tests.guestd.fakeroot import FakeRoot


class FakeTimer:
    def __init__(self, delay: float, function: Callable[[], None]) -> None:
        self.delay = delay
        self.function = function
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        """What the timer thread does when its time comes (even if cancelled too late)."""
        self.function()


class Harness:
    def __init__(self, root: Path, action: power.Power | None = None) -> None:
        self.timers: list[FakeTimer] = []
        self.done: list[str] = []
        self.scheduler = PowerScheduler(root, power=action or self.done.append, timer=self._timer)

    def _timer(self, delay: float, function: Callable[[], None]) -> FakeTimer:
        self.timers.append(FakeTimer(delay, function))
        return self.timers[-1]


@pytest.fixture
def harness(fake_root: FakeRoot) -> Harness:
    fake_root.write("dev/console", "")
    return Harness(fake_root.path)


def test_the_action_waits_for_its_delay(harness: Harness):
    harness.scheduler.request(REBOOT, 30, "kernel update")
    [timer] = harness.timers
    assert timer.delay == 30.0
    assert harness.done == []
    timer.fire()
    assert harness.done == [REBOOT]


def test_users_are_told_at_once(harness: Harness, fake_root: FakeRoot):
    fake_root.set_logins([(77, "pts/2", "alice", "", 0)])
    fake_root.write("dev/pts/2", "")
    harness.scheduler.request(POWEROFF, 60, "maintenance\x1b[31m window")
    expected = (
        b"\r\n*** virtplane: the host asked this system to power off in 60 seconds: "
        b"maintenance [31m window ***\r\n"
    )
    assert (fake_root.path / "dev/console").read_bytes() == expected
    assert (fake_root.path / "dev/pts/2").read_bytes() == expected


def test_announcements():
    assert power.announcement(REBOOT, 0, "") == (
        "\r\n*** virtplane: the host asked this system to reboot now ***\r\n"
    )
    assert "reboot in 1 second ***" in power.announcement(REBOOT, 1, " ")


def test_a_new_request_replaces_the_pending_one(harness: Harness):
    harness.scheduler.request(REBOOT, 600, "")
    harness.scheduler.request(POWEROFF, 5, "")
    first, second = harness.timers
    assert first.cancelled and not second.cancelled
    first.fire()  # went off just as it was replaced: must not act
    second.fire()
    assert harness.done == [POWEROFF]


def test_cancel(harness: Harness):
    assert not harness.scheduler.cancel()
    harness.scheduler.request(POWEROFF, 5, "")
    assert harness.scheduler.pending
    assert harness.scheduler.cancel()
    assert not harness.scheduler.pending
    harness.timers[0].fire()
    assert harness.timers[0].cancelled and harness.done == []
    assert not harness.scheduler.cancel()


def test_a_failing_action_is_logged_not_raised(
    fake_root: FakeRoot, caplog: pytest.LogCaptureFixture
):
    def broken(action: str) -> None:
        raise PowerError("no way")

    harness = Harness(fake_root.path, broken)
    harness.scheduler.request(REBOOT, 0, "")
    harness.timers[0].fire()
    assert "reboot failed" in caplog.text


def test_unknown_action(harness: Harness):
    with pytest.raises(ValueError):
        harness.scheduler.request("hibernate", 0, "")


def test_the_real_timer_runs_on_another_thread():
    ran: list[str] = []
    timer = power.thread_timer(0.0, lambda: ran.append("x"))
    assert isinstance(timer, threading.Timer)
    timer.join(10)
    assert ran == ["x"]


class Attempts:
    """system_power with every way of acting replaced by a recorder."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, succeed: set[str]) -> None:
        self.tried: list[str] = []

        def run(argv: list[str], failures: list[str]) -> bool:
            self.tried.append(" ".join(Path(a).name for a in argv))
            if argv[0] in succeed or Path(argv[0]).name in succeed:
                return True
            failures.append(f"{argv[0]} failed")
            return False

        def syscall(action: str) -> None:
            self.tried.append(f"reboot(2) {action}")
            if "syscall" not in succeed:
                raise OSError(1, "Operation not permitted")

        monkeypatch.setattr(power, "_run", run)
        monkeypatch.setattr(power, "reboot_syscall", syscall)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name in ("systemctl", "poweroff", "reboot"):
            (bin_dir / name).write_text("#!/bin/sh\nexit 99\n")
            (bin_dir / name).chmod(0o755)
        monkeypatch.setenv("PATH", str(bin_dir))


def test_systemd_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    attempts = Attempts(monkeypatch, tmp_path, succeed={"systemctl"})
    monkeypatch.setattr(power, "systemd_running", lambda: True)
    power.system_power(REBOOT)
    assert attempts.tried == ["systemctl reboot"]


def test_without_systemd_the_command_then_the_syscall(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    attempts = Attempts(monkeypatch, tmp_path, succeed={"syscall"})
    monkeypatch.setattr(power, "systemd_running", lambda: False)
    power.system_power(POWEROFF)
    assert attempts.tried == ["poweroff", "reboot(2) poweroff"]


def test_when_nothing_works_every_failure_is_told(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    Attempts(monkeypatch, tmp_path, succeed=set())
    monkeypatch.setattr(power, "systemd_running", lambda: True)
    with pytest.raises(PowerError) as caught:
        power.system_power(REBOOT)
    message = str(caught.value)
    assert "systemctl" in message and "reboot failed" in message and "reboot(2)" in message


def test_run_reports_exit_status_and_missing_programs(tmp_path: Path):
    failures: list[str] = []
    assert power._run(["true"], failures)
    assert not power._run(["sh", "-c", "echo nope >&2; exit 3"], failures)
    assert not power._run([str(tmp_path / "missing")], failures)
    assert failures[0].endswith("exit status 3 nope")
    assert "missing" in failures[1]


def test_run_does_not_hang_on_a_stuck_command(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(power, "COMMAND_TIMEOUT", 0.2)
    failures: list[str] = []
    assert not power._run(["sleep", "30"], failures)
    assert "timed out" in failures[0]
