"""Powering the guest off or rebooting it, after a delay, on the host's request.

The agent accepts a request at once and answers it; the power action runs
later on a timer thread, so heartbeats go on meanwhile. A new request
replaces one still pending; stopping the agent cancels it. Users are told
on their terminals and on /dev/console when the request is accepted
(guestd.users.broadcast).

The action, first that works:

1. ``systemctl poweroff|reboot`` when systemd runs the system
   (/run/systemd/system exists);
2. the ``poweroff``/``reboot`` command (busybox, sysvinit);
3. the reboot(2) system call through ctypes, after sync(2): no service is
   stopped cleanly, so this is the last resort.

Runs inside guests: standard library only, Python >= 3.9.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Callable, Protocol

from guestd import users

log = logging.getLogger(__name__)

POWEROFF = "poweroff"
REBOOT = "reboot"
ACTIONS = (POWEROFF, REBOOT)
COMMAND_TIMEOUT = 60.0
RB_POWER_OFF = 0x4321FEDC
RB_AUTOBOOT = 0x01234567
"""reboot(2) commands, from <linux/reboot.h>."""

Power = Callable[[str], None]
"""Carries out POWEROFF or REBOOT; raises PowerError when it could not."""


class PowerError(Exception):
    """The guest could not be powered off or rebooted."""


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Timer = Callable[[float, Callable[[], None]], Cancellable]
"""Runs a function after a delay in seconds, on another thread."""


def thread_timer(delay: float, function: Callable[[], None]) -> Cancellable:
    timer = threading.Timer(delay, function)
    timer.daemon = True
    timer.name = "guestd-power"
    timer.start()
    return timer


def announcement(action: str, delay_seconds: int, message: str) -> str:
    """What users read on their terminals."""
    what = "power off" if action == POWEROFF else "reboot"
    when = {0: "now", 1: "in 1 second"}.get(delay_seconds, f"in {delay_seconds} seconds")
    text = f"virtplane: the host asked this system to {what} {when}"
    cleaned = users.clean_message(message).strip()
    if cleaned:
        text += f": {cleaned}"
    return f"\r\n*** {text} ***\r\n"


class PowerScheduler:
    """Holds at most one pending power action."""

    def __init__(self, root: Path, power: Power | None = None, timer: Timer = thread_timer):
        self._root = root
        self._power = power or system_power
        self._timer = timer
        self._lock = threading.Lock()
        self._pending: Cancellable | None = None
        self._armed = 0
        """Counts requests and cancellations: a timer acts only if none came after it."""

    def request(self, action: str, delay_seconds: int, message: str) -> None:
        """Tells the users and arms the action, replacing any pending one."""
        if action not in ACTIONS:
            raise ValueError(f"unknown power action {action!r}")
        told = users.broadcast(self._root, announcement(action, delay_seconds, message))
        log.warning(
            "host asked to %s in %d s (told %d terminals): %s",
            action,
            delay_seconds,
            told,
            users.clean_message(message),
        )
        with self._lock:
            if self._pending is not None:
                self._pending.cancel()
                log.info("the pending power action is replaced")
            self._armed += 1
            armed = self._armed
            self._pending = self._timer(float(delay_seconds), lambda: self._fire(action, armed))

    @property
    def pending(self) -> bool:
        """Whether an action waits for its time."""
        with self._lock:
            return self._pending is not None

    def cancel(self) -> bool:
        """Cancels the pending action; whether there was one."""
        with self._lock:
            pending, self._pending = self._pending, None
            self._armed += 1
        if pending is not None:
            pending.cancel()
        return pending is not None

    def _fire(self, action: str, armed: int) -> None:
        with self._lock:
            if armed != self._armed:
                return  # replaced or cancelled while its timer was already going off
            self._pending = None
        log.warning("carrying out %s", action)
        try:
            self._power(action)
        except Exception:
            log.exception("%s failed", action)


def system_power(action: str) -> None:
    """Powers this machine off or reboots it (see the module docstring)."""
    failures: list[str] = []
    if systemd_running() and _run(["systemctl", action], failures):
        return
    command = shutil.which(action)
    if command and _run([command], failures):
        return
    try:
        reboot_syscall(action)
        return
    except OSError as exc:
        failures.append(f"reboot(2): {exc}")
    raise PowerError(f"cannot {action}: " + "; ".join(failures))


def systemd_running() -> bool:
    """Whether systemd runs this system, as sd_booted(3) tells."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def _run(argv: list[str], failures: list[str]) -> bool:
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        failures.append(f"{' '.join(argv)}: {exc}")
        return False
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", errors="replace").strip()[:200]
        failures.append(f"{' '.join(argv)}: exit status {done.returncode} {detail}".strip())
        return False
    return True


def reboot_syscall(action: str) -> None:
    """sync(2), then reboot(2); returns only on failure (raised as OSError)."""
    try:
        # Not in every minimal python, and needed only as the last resort.
        import ctypes  # noqa: PLC0415
    except ImportError as exc:
        raise OSError(f"no ctypes: {exc}") from exc
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sync()
    command = RB_POWER_OFF if action == POWEROFF else RB_AUTOBOOT
    if libc.reboot(ctypes.c_int(command)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
