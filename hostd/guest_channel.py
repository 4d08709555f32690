"""The host end of one VM's guest channel: a unix socket libvirt binds to a virtio-serial port.

The conversation: hostd connects and sends HostHello; the agent answers
GuestHello with the versions it speaks; hostd answers VersionChoice (the
highest version both speak) and from then on takes the agent's reports and
heartbeats. Reports are merged into the VM's GuestInfo and handed to a sink
(one journal event each); heartbeats only refresh what is kept in memory.

The guest is untrusted: frames are bounded (FrameDecoder), unparsable frames
and unknown messages are ignored, strings are sanitised (hostd.guest_info),
and nothing that happens on one channel escapes its task. Each channel has
a byte budget (past it hostd stops reading for a while: the guest's writes
block and hostd holds nothing more) and a message budget (the excess is
dropped), so a flooding guest costs bounded CPU and memory and cannot
delay another VM's channel. Payload bytes checksummed in vain (crafted
headers nested in a payload) count against the byte budget too. A channel
over either budget is THROTTLED (the sink is told, with why) until it has
kept within them for calm_seconds.

The last report is kept as it arrived (one message, at most max_payload
bytes), for debugging.

An agent that misses three heartbeats is NOT_RESPONDING: its facts are kept
as last observed and the sink is told; the next message makes it
RESPONDING again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import host_agent_service_pb2 as agent_pb
from virtplane.v1 import vm_pb2

from hostd import guest_info
from hostd.config import ChannelLimits
from hostd.errors import AgentRefused, AgentUnavailable
from hostd.ratelimit import TokenBucket
from virtplane_common.framing import FrameDecoder, FrameTooLarge, encode

log = logging.getLogger(__name__)

HOST_MIN_VERSION = 1
HOST_MAX_VERSION = 1
MESSAGE_SINCE: dict[str, int] = {
    "hello": 1,
    "heartbeat": 1,
    "report": 1,
    "pong": 1,
    "command_result": 1,
}
"""The protocol version that brought each guest message: a message newer than
the version agreed with the agent is refused (ignored), like an unknown one."""
"""The guest-channel protocol versions hostd speaks, inclusive."""
READ_SIZE = 64 * 1024
REPORT_JSON_CAP = 512 * 1024
"""Longest JSON rendering of the last report handed out, in characters."""

ReportSink = Callable[[str, vm_pb2.GuestInfo], None]
"""Called with (vm_id, merged GuestInfo) after every report."""
_Handler = Callable[[gc.GuestMessage, int], None]
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
        self._limits = limits
        self._on_report = on_report
        self._clock = clock
        self._decoder = FrameDecoder(limits.max_payload)
        self._info = vm_pb2.GuestInfo(channel_state=ChannelState.CHANNEL_STATE_OK)
        self._expected_agent = expected_agent
        self._opened = monotonic()
        self._version: int | None = None
        self._sequence = 0
        self._outbox: list[gc.HostMessage] = []
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[gc.CommandResult]] = {}
        self._pongs: dict[bytes, asyncio.Future[None]] = {}
        self.ignored_messages = 0
        """Frames that did not parse, and messages that came out of turn or are unknown."""
        self.dropped_messages = 0
        """Messages over the message budget, dropped unread."""
        self.throttled_seconds = 0.0
        """Time spent not reading because the guest sent over its byte budget."""
        self.bytes_received = 0
        self.messages_received = 0
        self._last_report: gc.GuestMessage | None = None
        self._last_report_received = 0
        self._over_budget_until = float("-inf")
        """When the guest last went over a budget, pause included (monotonic)."""
        self._monotonic = monotonic
        self._bytes = TokenBucket(limits.max_bytes_per_second, limits.max_bytes_burst, monotonic)
        self._messages = TokenBucket(
            limits.max_messages_per_second, limits.max_messages_burst, monotonic
        )
        self._heartbeat_seconds = limits.default_heartbeat_seconds
        self._last_heard = monotonic()
        self._handlers: dict[str, _Handler] = {
            "hello": self._on_hello,
            "heartbeat": self._on_heartbeat,
            "report": self._on_report_message,
            "pong": self._on_pong,
            "command_result": self._on_command_result,
        }

    @property
    def version(self) -> int | None:
        """The protocol version agreed with the agent; None before (or without) agreement."""
        return self._version

    @property
    def info(self) -> vm_pb2.GuestInfo:
        """A copy of what the agent has reported so far."""
        copy = vm_pb2.GuestInfo()
        copy.CopyFrom(self._info)
        if copy.channel_state == ChannelState.CHANNEL_STATE_THROTTLED:
            copy.channel_message = self._throttle_reason()
        return copy

    def stats(self) -> agent_pb.GuestChannelStats:
        """What the channel has carried and cost so far."""
        return agent_pb.GuestChannelStats(
            connected=self._writer is not None,
            protocol_version=self._version or 0,
            bytes_received=self.bytes_received,
            messages_received=self.messages_received,
            ignored_messages=self.ignored_messages,
            dropped_messages=self.dropped_messages,
            discarded_bytes=self._decoder.discarded_bytes,
            throttled_seconds=self.throttled_seconds,
        )

    def last_report(self) -> tuple[str, bool, int]:
        """The last report message as JSON (cut at REPORT_JSON_CAP characters),
        whether it was cut, and when it was received (Unix ns); ("", False, 0)
        before the first report."""
        if self._last_report is None:
            return "", False, 0
        text = json_format.MessageToJson(self._last_report, indent=1)
        return text[:REPORT_JSON_CAP], len(text) > REPORT_JSON_CAP, self._last_report_received

    async def run(self) -> None:
        """Connects and talks, reconnecting after the socket closes; returns when the
        socket cannot be reached within the connect timeout."""
        while True:
            streams = await self._connect()
            if streams is None:
                return
            reader, writer = streams
            try:
                await self._session(reader, writer)
            except OSError as exc:
                log.info("guest channel of VM %s: %s", self.vm_id, exc)
            finally:
                writer.close()
            self._decoder.reset()
            self._version = None
            await asyncio.sleep(self._limits.connect_retry_seconds)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._limits.connect_timeout_seconds
        while True:
            try:
                return await asyncio.open_unix_connection(str(self.socket_path))
            except OSError as exc:
                if loop.time() >= deadline:
                    log.warning(
                        "guest channel of VM %s: cannot connect to %s (%s); giving up",
                        self.vm_id,
                        self.socket_path,
                        exc,
                    )
                    return None
            await asyncio.sleep(self._limits.connect_retry_seconds)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log.debug("guest channel of VM %s connected", self.vm_id)
        hello = gc.HostHello(min_version=HOST_MIN_VERSION, max_version=HOST_MAX_VERSION)
        self._outbox[:] = [gc.HostMessage(hello=hello)]  # nothing stale from a past session
        await self._flush(writer)
        self._writer = writer
        watchdog = asyncio.create_task(self._watch_heartbeats())
        try:
            while data := await reader.read(READ_SIZE):
                pause = self.feed(data)
                await self._flush(writer)
                if pause > 0:
                    self.throttled_seconds += pause
                    await asyncio.sleep(pause)
        finally:
            watchdog.cancel()
            self._writer = None
            waiters: list[asyncio.Future[Any]] = [*self._pending.values(), *self._pongs.values()]
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(AgentUnavailable(self.vm_id, "the channel closed"))
            self._pending.clear()
            self._pongs.clear()
        log.debug("guest channel of VM %s closed", self.vm_id)

    @property
    def responsive(self) -> bool:
        """The agent has agreed a version, is connected and keeps its heartbeat."""
        return (
            self._writer is not None
            and self._version is not None
            and self._info.agent_state == AgentState.AGENT_STATE_RESPONDING
        )

    async def refresh(self) -> None:
        """Asks the agent for a full report; it arrives like any other."""
        await self._send(gc.HostMessage(refresh=gc.Refresh()))

    async def ping(self, within: float) -> float:
        """Round trip to the agent, in seconds."""
        payload = secrets.token_bytes(8)
        pong = asyncio.get_running_loop().create_future()
        self._pongs[payload] = pong
        start = self._monotonic()
        try:
            await self._send(gc.HostMessage(ping=gc.Ping(payload=payload)))
            await asyncio.wait_for(pong, within)
        except TimeoutError:
            raise AgentUnavailable(self.vm_id, f"no pong within {within:g} s") from None
        finally:
            self._pongs.pop(payload, None)
        return self._monotonic() - start

    async def power(self, action: str, delay_seconds: int, message: str, within: float) -> None:
        """Asks the agent to shut down ("shutdown") or reboot ("reboot") the
        guest; returns once the agent accepted, raises AgentUnavailable or
        AgentRefused otherwise."""
        if action == "shutdown":
            command = gc.HostMessage(
                shutdown=gc.Shutdown(delay_seconds=delay_seconds, message=message)
            )
        else:
            command = gc.HostMessage(reboot=gc.Reboot(delay_seconds=delay_seconds, message=message))
        result = asyncio.get_running_loop().create_future()
        sequence = await self._send(command, result)
        try:
            answer = await asyncio.wait_for(result, within)
        except TimeoutError:
            raise AgentUnavailable(
                self.vm_id, f"no answer to {action} within {within:g} s"
            ) from None
        finally:
            self._pending.pop(sequence, None)
        if not answer.accepted:
            raise AgentRefused(self.vm_id, action, answer.error)

    async def _send(
        self,
        message: gc.HostMessage,
        result: asyncio.Future[gc.CommandResult] | None = None,
    ) -> int:
        writer = self._writer
        if writer is None or self._version is None:
            raise AgentUnavailable(self.vm_id, "the agent is not connected")
        self._outbox.append(message)
        sequence = self._sequence + len(self._outbox)
        if result is not None:
            self._pending[sequence] = result
        await self._flush(writer)
        return sequence

    def feed(self, data: bytes) -> float:
        """Handles bytes read from the channel, within the message budget;
        returns how long to stop reading to stay within the byte budget."""
        self.bytes_received += len(data)
        rejected = self._decoder.rejected_bytes
        payloads = self._decoder.feed(data)
        pause = self._bytes.take(len(data) + self._decoder.rejected_bytes - rejected)
        dropped = self.dropped_messages
        for payload in payloads:
            self.messages_received += 1
            if self._messages.try_take():
                self._receive(payload)
            else:
                self.dropped_messages += 1
        if pause > 0 or self.dropped_messages > dropped:
            self._over_budget(pause)
        return pause

    @property
    def channel_state(self) -> ChannelState.ValueType:
        return self._info.channel_state

    def _over_budget(self, pause: float) -> None:
        self._over_budget_until = max(self._over_budget_until, self._monotonic() + pause)
        if self._info.channel_state != ChannelState.CHANNEL_STATE_THROTTLED:
            log.warning("guest channel of VM %s: %s", self.vm_id, self._throttle_reason())
            self._info.channel_state = ChannelState.CHANNEL_STATE_THROTTLED
            self._on_report(self.vm_id, self.info)

    def check_calm(self) -> None:
        """Lifts THROTTLED once the guest has kept within its budgets for calm_seconds."""
        if self._info.channel_state != ChannelState.CHANNEL_STATE_THROTTLED:
            return
        if self._monotonic() - self._over_budget_until >= self._limits.calm_seconds:
            log.info("guest channel of VM %s within its budgets again", self.vm_id)
            self._info.channel_state = ChannelState.CHANNEL_STATE_OK
            self._info.channel_message = ""
            self._on_report(self.vm_id, self.info)

    def _throttle_reason(self) -> str:
        limits = self._limits
        return (
            f"over its budget: {self.dropped_messages} messages dropped"
            f" (limit {limits.max_messages_per_second:g}/s),"
            f" reading paused {self.throttled_seconds:.1f} s"
            f" (limit {limits.max_bytes_per_second / 1024:g} KiB/s),"
            f" {self.ignored_messages} messages unusable,"
            f" {self._decoder.discarded_bytes} bytes of garbage"
        )

    @property
    def agent_state(self) -> AgentState.ValueType:
        return self._info.agent_state

    def check_heartbeat(self) -> None:
        """Declares the agent not responding when it has missed its heartbeats,
        or, awaited (expected_agent), when it has not spoken in time."""
        if self._version is None:
            self._check_awaited()
            return
        if self._info.agent_state != AgentState.AGENT_STATE_RESPONDING:
            return
        silent = self._monotonic() - self._last_heard
        if silent > self._limits.missed_heartbeats * self._heartbeat_seconds:
            log.warning(
                "guest agent of VM %s silent for %.1f s: not responding", self.vm_id, silent
            )
            self._info.agent_state = AgentState.AGENT_STATE_NOT_RESPONDING
            self._on_report(self.vm_id, self.info)

    def _check_awaited(self) -> None:
        if not self._expected_agent or self._info.agent_state != AgentState.AGENT_STATE_UNSPECIFIED:
            return
        waited = self._monotonic() - self._opened
        if waited > self._limits.agent_start_seconds:
            log.warning(
                "guest agent %s of VM %s has not spoken in %.0f s: not responding",
                self._expected_agent,
                self.vm_id,
                waited,
            )
            self._info.agent_state = AgentState.AGENT_STATE_NOT_RESPONDING
            self._info.agent_version = self._expected_agent
            self._on_report(self.vm_id, self.info)

    async def _watch_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(min(self._heartbeat_seconds, 1.0))
            self.check_heartbeat()
            self.check_calm()

    def _heard(self, received: int) -> None:
        self._last_heard = self._monotonic()
        self._info.last_heard_time.CopyFrom(guest_info.timestamp(received))

    def _receive(self, payload: bytes) -> None:
        received = self._clock()
        try:
            message = gc.GuestMessage.FromString(payload)
        except DecodeError:
            self.ignored_messages += 1
            return
        body = message.WhichOneof("body")
        handler = self._handlers.get(body) if body else None
        agreed = self._version
        if (
            handler is None
            or (agreed is None and body != "hello")
            or (agreed is not None and MESSAGE_SINCE.get(body or "", 1) > agreed)
        ):
            self.ignored_messages += 1
            return
        self._heard(received)
        # RESPONDING from the first report on; a silent agent that speaks
        # again is RESPONDING at once, whatever it says, but a hello: that is
        # a new agent (restarted, or its guest rebooted), whose full report
        # follows; until then the facts are the old agent's, still stale.
        state = self._info.agent_state
        revived = (
            self._version is not None
            and state == AgentState.AGENT_STATE_NOT_RESPONDING
            and body != "hello"
        )
        if revived or (body == "report" and self._version is not None):
            self._info.agent_state = AgentState.AGENT_STATE_RESPONDING
        try:
            handler(message, received)
            if revived and body != "report":  # a report tells the sink itself
                self._on_report(self.vm_id, self.info)
        except Exception:  # one bad message must not end the channel
            log.exception("guest channel of VM %s: handling %s failed", self.vm_id, body)

    def _on_hello(self, message: gc.GuestMessage, received: int) -> None:
        hello = message.hello
        self._info.agent_version = guest_info.clean_text(
            hello.agent_version, self._limits.max_string
        )
        low, high = (
            max(hello.min_version, HOST_MIN_VERSION),
            min(hello.max_version, HOST_MAX_VERSION),
        )
        if low > high:
            log.warning(
                "guest agent of VM %s speaks versions %d..%d, hostd %d..%d: not talking",
                self.vm_id,
                hello.min_version,
                hello.max_version,
                HOST_MIN_VERSION,
                HOST_MAX_VERSION,
            )
            self._version = None
            return
        self._version = high
        if hello.heartbeat_interval_ms:
            self._heartbeat_seconds = min(
                max(hello.heartbeat_interval_ms / 1000, self._limits.min_heartbeat_seconds),
                self._limits.max_heartbeat_seconds,
            )
        self._outbox.append(gc.HostMessage(version_choice=gc.VersionChoice(version=high)))

    def _on_heartbeat(self, message: gc.GuestMessage, received: int) -> None:
        uptime = guest_info.clean_seconds(message.heartbeat.uptime_seconds)
        if uptime is not None:
            self._info.uptime_seconds = uptime
        self._info.memory_free_kib = message.heartbeat.free_memory_kib
        self._info.last_report_time.CopyFrom(guest_info.timestamp(received))

    def _on_report_message(self, message: gc.GuestMessage, received: int) -> None:
        merged = guest_info.merge_report(self._info, message.report, self._limits)
        merged.last_report_time.CopyFrom(guest_info.timestamp(received))
        observed = guest_info.observed_nanos(
            message.sent_unix_nanos, received, self._limits.max_clock_skew_seconds
        )
        merged.observed_time.CopyFrom(guest_info.timestamp(observed))
        merged.channel_state = self._info.channel_state
        self._info = merged
        self._last_report, self._last_report_received = message, received
        self._on_report(self.vm_id, self.info)

    def _on_pong(self, message: gc.GuestMessage, received: int) -> None:
        self._info.last_report_time.CopyFrom(guest_info.timestamp(received))
        waiter = self._pongs.get(message.pong.payload)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_command_result(self, message: gc.GuestMessage, received: int) -> None:
        answer = gc.CommandResult()
        answer.CopyFrom(message.command_result)
        answer.error = guest_info.clean_text(answer.error, self._limits.max_string)
        waiter = self._pending.get(answer.command_sequence)
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    async def _flush(self, writer: asyncio.StreamWriter) -> None:
        if not self._outbox:
            return
        for message in self._outbox:
            self._sequence += 1
            message.sequence = self._sequence
            try:
                writer.write(encode(message.SerializeToString(), self._limits.max_payload))
            except FrameTooLarge:
                log.error("guest channel of VM %s: host message too large", self.vm_id)
        self._outbox.clear()
        try:
            await asyncio.wait_for(writer.drain(), self._limits.write_timeout_seconds)
        except TimeoutError:
            log.warning("guest channel of VM %s: the guest is not reading", self.vm_id)
