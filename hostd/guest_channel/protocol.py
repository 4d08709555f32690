"""The guest-channel protocol: version negotiation, and each message to its handler.

hostd sends HostHello with the versions it speaks; the agent answers
GuestHello with its own; hostd answers VersionChoice, the highest version
both speak. Until then only a hello is taken. Each message kind is
dispatched through one table of handlers (Handlers names those of the parts
beyond negotiation); a message that does not parse, comes out of turn, is
unknown, or is newer than the agreed version (MESSAGE_SINCE) is ignored and
counted. One bad message must not end the channel: a handler's failure is
logged and the channel goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from virtplane.v1 import guest_channel_pb2 as gc

from hostd.config import ChannelLimits
from hostd.guest_channel.budget import ChannelCounters
from hostd.guest_channel.facts import GuestFacts
from hostd.guest_channel.liveness import Liveness
from virtplane_common.validation import clean_agent_version

log = logging.getLogger(__name__)

HOST_MIN_VERSION = 1
HOST_MAX_VERSION = 1
"""The guest-channel protocol versions hostd speaks, inclusive."""
MESSAGE_SINCE: dict[str, int] = {
    "hello": 1,
    "heartbeat": 1,
    "report": 1,
    "pong": 1,
    "command_result": 1,
}
"""The protocol version that brought each guest message: a message newer than
the version agreed with the agent is refused (ignored), like an unknown one."""

Handler = Callable[[gc.GuestMessage, int], None]
"""Takes one guest message and when it was received (Unix ns)."""


@dataclass(frozen=True)
class Handlers:
    """Who takes each guest message once a version is agreed (a hello is the protocol's)."""

    heartbeat: Handler
    report: Handler
    pong: Handler
    command_result: Handler


def host_hello() -> gc.HostMessage:
    """The first message of every connection."""
    hello = gc.HostHello(min_version=HOST_MIN_VERSION, max_version=HOST_MAX_VERSION)
    return gc.HostMessage(hello=hello)


class GuestProtocol:
    """One channel's side of the protocol: the version agreed, and the dispatch."""

    def __init__(
        self,
        limits: ChannelLimits,
        counters: ChannelCounters,
        facts: GuestFacts,
        liveness: Liveness,
        *,
        post: Callable[[gc.HostMessage], object],
        handlers: Handlers,
        clock: Callable[[], int],
    ) -> None:
        """post: queues a message to the agent, sent after the bytes at hand are handled."""
        self._limits = limits
        self._counters = counters
        self._facts = facts
        self._liveness = liveness
        self._post = post
        self._clock = clock
        self.version: int | None = None
        """The protocol version agreed with the agent; None before (or without) agreement."""
        self._handlers: dict[str, Handler] = {
            "hello": self._on_hello,
            "heartbeat": handlers.heartbeat,
            "report": handlers.report,
            "pong": handlers.pong,
            "command_result": handlers.command_result,
        }

    def reset(self) -> None:
        """The connection closed: the next one negotiates again."""
        self.version = None

    def receive(self, payload: bytes) -> None:
        """Handles one frame's payload from the agent."""
        received = self._clock()
        try:
            message = gc.GuestMessage.FromString(payload)
        except DecodeError:
            self._counters.ignored_messages += 1
            return
        body = message.WhichOneof("body") or ""
        handler = self._admitted(body)
        if handler is None:
            self._counters.ignored_messages += 1
            return
        changed = self._liveness.heard(
            received, body, agreed=self.version is not None, instance=message.agent_instance
        )
        try:
            handler(message, received)
            if changed and body != "report":  # a report tells the sink itself
                self._facts.publish()
        except Exception:  # one bad message must not end the channel
            vm_id = self._facts.vm_id
            log.exception("guest channel of VM %s: handling %s failed", vm_id, body)

    def _admitted(self, body: str) -> Handler | None:
        """The handler of a message of kind body, if it is taken now."""
        handler = self._handlers.get(body)
        agreed = self.version
        if agreed is None:
            return handler if body == "hello" else None
        if MESSAGE_SINCE.get(body, 1) > agreed:
            return None
        return handler

    def _on_hello(self, message: gc.GuestMessage, received: int) -> None:
        hello = message.hello
        self._facts.current.agent_version = clean_agent_version(hello.agent_version)
        low, high = (
            max(hello.min_version, HOST_MIN_VERSION),
            min(hello.max_version, HOST_MAX_VERSION),
        )
        if low > high:
            log.warning(
                "guest agent of VM %s speaks versions %d..%d, hostd %d..%d: not talking",
                self._facts.vm_id,
                hello.min_version,
                hello.max_version,
                HOST_MIN_VERSION,
                HOST_MAX_VERSION,
            )
            self.version = None
            return
        self.version = high
        self._liveness.agreed(hello.heartbeat_interval_ms)
        self._post(gc.HostMessage(version_choice=gc.VersionChoice(version=high)))
