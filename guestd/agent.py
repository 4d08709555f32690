"""The guest agent: answers the host over the channel and reports the guest's facts.

The conversation, as the agent sees it:

- On start, and whenever the host side (re)connects or sends HostHello, the
  agent sends GuestHello with the protocol versions it speaks.
- VersionChoice with a supported version starts a session: a full report at
  once, then every heartbeat interval a Heartbeat and, if any section
  changed, a partial report holding only those sections. An unsupported
  choice ends any session; the agent then waits for another choice.
- Refresh asks for a full report, Ping for a Pong. Shutdown and Reboot are
  answered at once with a CommandResult (command_sequence: the request's
  sequence) saying whether they were accepted; the guest's users are told
  and the action follows after the requested delay (guestd.power). All of
  these are ignored outside a session, as is any message the agent does not
  know.
- A disconnect of the host side ends the session and drops messages queued
  but not begun; sequence numbers therefore may skip, but never go back
  within one agent_instance.

Runs inside guests: standard library and protobuf only, Python >= 3.9.
"""

from __future__ import annotations

import importlib.metadata
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from google.protobuf.message import DecodeError
from virtplane.v1 import guest_channel_pb2 as gc

from guestd import facts
from guestd.power import POWEROFF, REBOOT, PowerScheduler
from guestd.report import Reporter, Sources
from guestd.transport import HostGone, Link
from virtplane_common.framing import FrameDecoder, FrameTooLarge, encode

log = logging.getLogger(__name__)

PROTOCOL_MIN_VERSION = 1
PROTOCOL_MAX_VERSION = 1
"""The guest-channel protocol versions this agent speaks, inclusive."""


DISTRIBUTIONS = ("virtplane-guestd", "virtplane")
"""Where guestd is installed from: its own wheel or .deb, or the whole project."""


def installed_version() -> str:
    """The agent's release, or 'unknown' when it runs from a bare copy."""
    for name in DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


@dataclass(frozen=True)
class AgentConfig:
    root: Path = Path("/")
    """The filesystem root facts are read from."""
    heartbeat_interval: float = 5.0
    retry_delay: float = 0.5
    """Pause between probes while the host is away; also the longest the agent
    goes without looking at its stop flag."""
    max_pending_bytes: int = 1 << 20
    """Outbox bound: past it, new messages are dropped until the host reads."""
    agent_version: str = field(default_factory=installed_version)
    applications_filter: tuple[str, ...] = ()
    """fnmatch patterns: only matching packages are reported; empty: all."""
    power_commands: bool = True
    """Whether the host may power off or reboot the guest through the agent."""


Handler = Callable[[gc.HostMessage], None]


class Agent:
    """Runs the conversation over one descriptor until stopped."""

    def __init__(
        self,
        fd: int,
        config: AgentConfig,
        instance: str | None = None,
        power: PowerScheduler | None = None,
    ) -> None:
        self._config = config
        self._link = Link(fd, config.max_pending_bytes)
        self._decoder = FrameDecoder()
        self._reporter = Reporter(
            config.root, config.applications_filter, Sources.for_root(config.root)
        )
        self._power = power or PowerScheduler(config.root)
        self._stop = threading.Event()
        self.instance = instance or secrets.token_hex(8)
        """Sent as agent_instance: tells this run of the agent from others."""
        self._sequence = 0
        self._version: int | None = None
        self._next_tick = 0.0
        self._host_gone = False
        self._handlers: dict[str, Handler] = {
            "hello": self._on_hello,
            "version_choice": self._on_version_choice,
            "refresh": self._on_refresh,
            "ping": self._on_ping,
            "shutdown": self._on_shutdown,
            "reboot": self._on_reboot,
        }

    @property
    def version(self) -> int | None:
        """The protocol version agreed with the host, None outside a session."""
        return self._version

    @property
    def host_connected(self) -> bool:
        """False from a hang-up of the host side until it is seen back."""
        return not self._host_gone

    @property
    def handled_bodies(self) -> frozenset[str]:
        return frozenset(self._handlers)

    def stop(self) -> None:
        """Asks run() to return; safe from any thread or a signal handler."""
        self._stop.set()

    def run(self) -> None:
        log.info("guestd %s started (instance %s)", self._config.agent_version, self.instance)
        self._send_hello()
        try:
            while not self._stop.is_set():
                self._step()
        finally:
            if self._power.cancel():
                log.warning("the agent stops: the pending power action is cancelled")
        log.info("guestd stopped")

    def _step(self) -> None:
        try:
            data = self._link.exchange(0.0 if self._host_gone else self._wait_time())
        except HostGone as exc:
            self._lose_host(str(exc))
            self._stop.wait(self._config.retry_delay)
            return
        if self._host_gone:
            self._find_host()
        for payload in self._decoder.feed(data):
            self._receive(payload)
        if self._version is not None and time.monotonic() >= self._next_tick:
            _guarded("the heartbeat tick", self._tick)

    def _wait_time(self) -> float:
        if self._version is None:
            return self._config.retry_delay
        until_tick = self._next_tick - time.monotonic()
        return max(0.0, min(until_tick, self._config.retry_delay))

    def _lose_host(self, reason: str) -> None:
        if self._host_gone:
            return
        self._host_gone = True
        log.info("host side not connected (%s); waiting for it", reason)
        self._decoder.reset()
        self._end_session()
        self._link.forget_unstarted()

    def _find_host(self) -> None:
        self._host_gone = False
        log.info("host side connected")
        self._send_hello()

    def _end_session(self) -> None:
        self._version = None
        self._reporter.forget_sent()

    def _receive(self, payload: bytes) -> None:
        try:
            message = gc.HostMessage.FromString(payload)
        except DecodeError:
            log.debug("ignoring a frame that is not a HostMessage")
            return
        body = message.WhichOneof("body")
        handler = self._handlers.get(body) if body else None
        if handler is None:
            log.debug("ignoring host message %d with body %s", message.sequence, body)
            return
        _guarded(f"handling {body}", lambda: handler(message))

    def _on_hello(self, message: gc.HostMessage) -> None:
        hello = message.hello
        log.debug("host speaks versions %d..%d", hello.min_version, hello.max_version)
        self._send_hello()

    def _on_version_choice(self, message: gc.HostMessage) -> None:
        version = message.version_choice.version
        if not PROTOCOL_MIN_VERSION <= version <= PROTOCOL_MAX_VERSION:
            log.warning(
                "host chose protocol version %d; this agent speaks %d..%d",
                version,
                PROTOCOL_MIN_VERSION,
                PROTOCOL_MAX_VERSION,
            )
            self._end_session()
            return
        log.info("host chose protocol version %d", version)
        self._end_session()
        self._version = version
        self._send_full_report()
        self._next_tick = time.monotonic() + self._config.heartbeat_interval

    def _on_refresh(self, message: gc.HostMessage) -> None:
        if self._version is None:
            log.debug("ignoring refresh before a version is agreed")
            return
        self._send_full_report()

    def _on_ping(self, message: gc.HostMessage) -> None:
        if self._version is None:
            log.debug("ignoring ping before a version is agreed")
            return
        self._send(gc.GuestMessage(pong=gc.Pong(payload=message.ping.payload)))

    def _on_shutdown(self, message: gc.HostMessage) -> None:
        self._on_power(message, POWEROFF, message.shutdown)

    def _on_reboot(self, message: gc.HostMessage) -> None:
        self._on_power(message, REBOOT, message.reboot)

    def _on_power(
        self, message: gc.HostMessage, action: str, request: gc.Shutdown | gc.Reboot
    ) -> None:
        """Answers a power request at once; the action itself waits for its delay."""
        if self._version is None:
            log.debug("ignoring %s before a version is agreed", action)
            return
        result = gc.CommandResult(command_sequence=message.sequence)
        if not self._config.power_commands:
            result.error = "power commands are disabled in the agent's configuration"
        else:
            try:
                self._power.request(action, request.delay_seconds, request.message)
                result.accepted = True
            except Exception as exc:
                log.exception("cannot arm %s", action)
                result.error = f"cannot {action}: {exc}"[:500]
        self._send(gc.GuestMessage(command_result=result))

    def _tick(self) -> None:
        interval = self._config.heartbeat_interval
        self._next_tick += interval
        if self._next_tick <= time.monotonic():
            self._next_tick = time.monotonic() + interval
        root = self._config.root
        heartbeat = gc.Heartbeat(
            uptime_seconds=facts.uptime_seconds(root),
            free_memory_kib=facts.free_memory_kib(root),
        )
        self._send(gc.GuestMessage(heartbeat=heartbeat))
        delta = self._reporter.delta()
        if delta is not None and self._send(gc.GuestMessage(report=delta)):
            self._reporter.mark_sent(delta)

    def _send_hello(self) -> None:
        hello = gc.GuestHello(
            min_version=PROTOCOL_MIN_VERSION,
            max_version=PROTOCOL_MAX_VERSION,
            agent_version=self._config.agent_version,
            heartbeat_interval_ms=round(self._config.heartbeat_interval * 1000),
        )
        self._send(gc.GuestMessage(hello=hello))

    def _send_full_report(self) -> None:
        report = self._reporter.full()
        if self._send(gc.GuestMessage(report=report)):
            self._reporter.mark_sent(report)

    def _send(self, message: gc.GuestMessage) -> bool:
        """Stamps and queues a message; False if it had to be dropped."""
        body = message.WhichOneof("body")
        if not self._link.has_room():
            log.debug("outbox full (%d bytes); dropping %s", self._link.pending_bytes, body)
            return False
        message.sequence = self._sequence + 1
        message.agent_instance = self.instance
        message.sent_unix_nanos = time.time_ns()
        try:
            frame = encode(message.SerializeToString())
        except FrameTooLarge as exc:
            log.error("cannot send %s: %s", body, exc)
            return False
        self._sequence += 1
        self._link.send(frame)
        return True


def _guarded(what: str, action: Callable[[], None]) -> None:
    """Runs action, logging instead of raising: nothing in a guest restarts the agent."""
    try:
        action()
    except Exception:
        log.exception("%s failed", what)
