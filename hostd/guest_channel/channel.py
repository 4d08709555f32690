"""GuestChannel: one VM's guest channel, its parts assembled behind one object.

The registry opens one per running VM and runs run() as a task; the servicer
and hostd.guest_agent read its facts, stats and last report and send it
commands. Each job is a part of its own (hostd.guest_channel lists them):
the socket loop, the protocol, the budgets, liveness, the facts and the
commands; this class only wires them and answers for them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

from virtplane.v1 import host_agent_service_pb2 as agent_pb
from virtplane.v1 import vm_pb2

from hostd.config import ChannelLimits
from hostd.guest_channel.budget import ChannelBudget, ChannelCounters, throttle_reason
from hostd.guest_channel.commands import GuestCommands
from hostd.guest_channel.facts import GuestFacts, ReportSink
from hostd.guest_channel.liveness import Liveness
from hostd.guest_channel.protocol import GuestProtocol, Handlers, host_hello
from hostd.guest_channel.socket_loop import Session, SocketLoop
from virtplane_common.framing import FrameDecoder

AgentState = vm_pb2.GuestInfo.AgentState
ChannelState = vm_pb2.GuestInfo.ChannelState


class GuestChannel:
    """Talks to one VM's agent. Run run() as a task; cancel it when the VM goes down."""

    def __init__(
        self,
        vm_id: str,
        socket_path: Path,
        limits: ChannelLimits,
        on_report: ReportSink,
        *,
        clock: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        expected_agent: str = "",
    ) -> None:
        """expected_agent: the agent version last seen in this VM, if any: an
        agent is then awaited (check_heartbeat)."""
        self.vm_id = vm_id
        self.socket_path = socket_path
        self._counters = ChannelCounters()
        self._decoder = FrameDecoder(limits.max_payload)
        reason = functools.partial(throttle_reason, limits, self._counters, self._decoder)
        self._facts = GuestFacts(vm_id, limits, on_report, reason)
        self._budget = ChannelBudget(limits, self._decoder, self._counters, self._facts, monotonic)
        self._liveness = Liveness(limits, self._facts, monotonic, expected_agent)
        session = Session(
            opening=host_hello,
            feed=self.feed,
            tick=self._tick,
            tick_seconds=lambda: min(self._liveness.heartbeat_seconds, 1.0),
            closed=self._closed,
            reset=self._reset,
        )
        self._loop = SocketLoop(vm_id, socket_path, limits, self._counters, session)
        self._commands = GuestCommands(
            limits, self._loop, self._facts, lambda: self.version is not None, monotonic
        )
        handlers = Handlers(
            heartbeat=self._facts.on_heartbeat,
            report=self._facts.on_report,
            pong=self._commands.on_pong,
            command_result=self._commands.on_command_result,
        )
        self._protocol = GuestProtocol(
            limits,
            self._counters,
            self._facts,
            self._liveness,
            post=self._loop.post,
            handlers=handlers,
            clock=clock,
        )

    @property
    def version(self) -> int | None:
        """The protocol version agreed with the agent; None before (or without) agreement."""
        return self._protocol.version

    @property
    def info(self) -> vm_pb2.GuestInfo:
        """A copy of what the agent has reported so far."""
        return self._facts.snapshot()

    @property
    def agent_state(self) -> AgentState.ValueType:
        return self._facts.current.agent_state

    @property
    def channel_state(self) -> ChannelState.ValueType:
        return self._facts.current.channel_state

    @property
    def responsive(self) -> bool:
        """The agent has agreed a version, is connected and keeps its heartbeat."""
        return (
            self._loop.connected
            and self.version is not None
            and self.agent_state == AgentState.AGENT_STATE_RESPONDING
        )

    @property
    def ignored_messages(self) -> int:
        """Frames that did not parse, and messages that came out of turn or are unknown."""
        return self._counters.ignored_messages

    @property
    def dropped_messages(self) -> int:
        """Messages over the message budget, dropped unread."""
        return self._counters.dropped_messages

    @property
    def throttled_seconds(self) -> float:
        """Time spent not reading because the guest sent over its byte budget."""
        return self._counters.throttled_seconds

    def stats(self) -> agent_pb.GuestChannelStats:
        """What the channel has carried and cost so far."""
        counters = self._counters
        return agent_pb.GuestChannelStats(
            connected=self._loop.connected,
            protocol_version=self.version or 0,
            bytes_received=counters.bytes_received,
            messages_received=counters.messages_received,
            ignored_messages=counters.ignored_messages,
            dropped_messages=counters.dropped_messages,
            discarded_bytes=self._decoder.discarded_bytes,
            throttled_seconds=counters.throttled_seconds,
        )

    def last_report(self) -> tuple[str, bool, int]:
        """The last report message as JSON (cut at REPORT_JSON_CAP characters),
        whether it was cut, and when it was received (Unix ns); ("", False, 0)
        before the first report."""
        return self._facts.last_report()

    async def run(self) -> None:
        """Connects and talks, reconnecting after the socket closes; returns when the
        socket cannot be reached within the connect timeout."""
        await self._loop.run()

    def feed(self, data: bytes) -> float:
        """Handles bytes read from the channel, within the message budget;
        returns how long to stop reading to stay within the byte budget."""
        return self._budget.feed(data, self._protocol.receive)

    def check_heartbeat(self) -> None:
        """Declares the agent not responding when it has missed its heartbeats,
        or, awaited (expected_agent), when it has not spoken in time."""
        self._liveness.check(agreed=self.version is not None)

    def check_calm(self) -> None:
        """Lifts THROTTLED once the guest has kept within its budgets for calm_seconds."""
        self._budget.check_calm()

    async def refresh(self) -> None:
        """Asks the agent for a full report; it arrives like any other."""
        await self._commands.refresh()

    async def ping(self, within: float) -> float:
        """Round trip to the agent, in seconds."""
        return await self._commands.ping(within)

    async def power(self, action: str, delay_seconds: int, message: str, within: float) -> None:
        """Asks the agent to shut down ("shutdown") or reboot ("reboot") the
        guest; returns once the agent accepted, raises AgentUnavailable or
        AgentRefused otherwise."""
        await self._commands.power(action, delay_seconds, message, within)

    def _tick(self) -> None:
        self.check_heartbeat()
        self.check_calm()

    def _closed(self) -> None:
        self._commands.fail_waiting()

    def _reset(self) -> None:
        self._decoder.reset()
        self._protocol.reset()
