"""The guest is untrusted: the host end of its channel survives any bytes,
bounds what a guest may cost, and tells when the agent stops talking."""

from __future__ import annotations

import asyncio
import json
import struct
import unicodedata
import zlib
from functools import partial
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import vm_pb2

from hostd import guest_channel
from hostd.config import ChannelLimits
from hostd.guest_channel import GuestChannel
from hostd.ratelimit import TokenBucket
from tests.support.fake_guest import FakeGuest
from tests.support.waiting import until
from virtplane_common.framing import HEADER_SIZE, MAGIC, encode

NOW = 1_700_000_000 * 10**9
State = vm_pb2.GuestInfo.AgentState
ChannelState = vm_pb2.GuestInfo.ChannelState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _frame(message: gc.GuestMessage) -> bytes:
    return encode(message.SerializeToString())


def _hello(interval_ms: int = 1000) -> bytes:
    return _frame(
        gc.GuestMessage(
            hello=gc.GuestHello(min_version=1, max_version=1, heartbeat_interval_ms=interval_ms)
        )
    )


def _report(hostname: str = "g") -> bytes:
    return _frame(
        gc.GuestMessage(
            sent_unix_nanos=NOW,
            report=gc.GuestReport(full=True, system=gc.SystemSection(hostname=hostname)),
        )
    )


def _heartbeat() -> bytes:
    return _frame(gc.GuestMessage(heartbeat=gc.Heartbeat(uptime_seconds=9.0)))


class Sink:
    def __init__(self) -> None:
        self.infos: list[vm_pb2.GuestInfo] = []

    def __call__(self, _vm_id: str, info: vm_pb2.GuestInfo) -> None:
        self.infos.append(info)


def _channel(limits: ChannelLimits | None = None) -> tuple[GuestChannel, Sink, Clock]:
    sink, clock = Sink(), Clock()
    channel = GuestChannel(
        "vm", Path("/nonexistent"), limits or ChannelLimits(), sink, clock=lambda: NOW,
        monotonic=clock,
    )  # fmt: skip
    return channel, sink, clock


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.try_take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 0.5  # 5 more tokens
    assert bucket.take(7) == pytest.approx(0.2)  # 2 in debt at 10/s
    clock.now += 0.2
    assert bucket.try_take(0.5) is False  # the debt was just repaid, nothing more
    clock.now += 100
    assert bucket.try_take(5) and not bucket.try_take(1)  # never more than the burst


def test_messages_over_the_budget_are_dropped_unread() -> None:
    channel, _, _ = _channel(ChannelLimits(max_messages_per_second=1, max_messages_burst=10))
    channel.feed(_hello() + _heartbeat() * 50)
    assert channel.version == 1
    assert channel.dropped_messages == 41
    assert channel.ignored_messages == 0


def test_bytes_over_the_budget_pause_reading() -> None:
    limits = ChannelLimits(max_bytes_per_second=1000, max_bytes_burst=1000)
    channel, _, _ = _channel(limits)
    assert channel.feed(b"\x00" * 1000) == 0
    assert channel.feed(b"\x00" * 500) == pytest.approx(0.5)


def test_nested_headers_cost_linear_work_charged_before_decoding() -> None:
    # Headers nested in a payload, each claiming a whole payload whose checksum
    # fails: a decoder re-checking each would spend a 256 KiB checksum per 16
    # bytes read. It checks at most the bytes read plus a credit, and all is charged.
    length = 256 * 1024 - 64
    head = struct.pack(">4sII", MAGIC, length, 0)
    nested = (head + struct.pack(">I", zlib.crc32(head))) * (300 * 1024 // HEADER_SIZE)
    limits = ChannelLimits(max_bytes_per_second=256 * 1024, max_bytes_burst=256 * 1024)
    channel, sink, _ = _channel(limits)
    decoder = channel._decoder
    pauses = [channel.feed(nested[i : i + 65536]) for i in range(0, len(nested), 65536)]
    assert decoder.checked_bytes <= len(nested) + 2 * (HEADER_SIZE + limits.max_payload)
    charged = len(nested) + decoder.rejected_bytes
    # The clock stands still: the last pause repays all that was charged.
    assert pauses[-1] == pytest.approx((charged - 256 * 1024) / (256 * 1024), rel=0.01)
    assert [i.channel_state for i in sink.infos] == [ChannelState.CHANNEL_STATE_THROTTLED]


def test_a_throttled_channel_is_ok_again_after_a_calm_while() -> None:
    limits = ChannelLimits(max_messages_per_second=1, max_messages_burst=5, calm_seconds=10)
    channel, sink, clock = _channel(limits)
    channel.feed(_hello() + _report("flood") + _heartbeat() * 20)
    assert channel.channel_state == ChannelState.CHANNEL_STATE_THROTTLED
    throttled = sink.infos[-1]
    assert throttled.channel_state == ChannelState.CHANNEL_STATE_THROTTLED
    assert "17 messages dropped (limit 1/s)" in throttled.channel_message
    assert throttled.hostname == "flood"  # the facts stay
    clock.now += 9
    channel.check_calm()
    assert channel.channel_state == ChannelState.CHANNEL_STATE_THROTTLED
    clock.now += 1
    channel.check_calm()
    assert sink.infos[-1].channel_state == ChannelState.CHANNEL_STATE_OK
    assert sink.infos[-1].channel_message == ""
    stats = channel.stats()
    assert (stats.messages_received, stats.dropped_messages) == (22, 17)
    assert stats.bytes_received > 0 and stats.protocol_version == 1


def test_a_message_newer_than_the_agreed_version_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # as if heartbeats had come with version 2 while this agent agreed on 1
    monkeypatch.setitem(guest_channel.MESSAGE_SINCE, "heartbeat", 2)
    channel, _, _ = _channel()
    channel.feed(_hello() + _report() + _heartbeat())
    assert channel.version == 1
    assert channel.ignored_messages == 1
    assert channel.info.uptime_seconds != 9.0  # the heartbeat's, refused


def test_the_last_report_is_kept_as_it_arrived() -> None:
    channel, _, _ = _channel()
    assert channel.last_report() == ("", False, 0)
    channel.feed(_hello() + _report("raw\x07name"))
    text, truncated, received = channel.last_report()
    report = json.loads(text)
    assert report["report"]["full"] is True
    assert report["report"]["system"]["hostname"] == "raw\x07name"  # as sent, not cleaned
    assert (truncated, received) == (False, NOW)
    assert channel.info.hostname == "rawname"


def test_three_missed_heartbeats_mean_not_responding_and_facts_stay() -> None:
    channel, sink, clock = _channel()
    channel.feed(_hello(interval_ms=1000) + _report("guest-a"))
    assert sink.infos[-1].agent_state == State.AGENT_STATE_RESPONDING
    clock.now += 2.9
    channel.check_heartbeat()
    clock.now += 0.2  # 3.1 s of silence: three 1 s beats missed
    channel.check_heartbeat()
    stale = sink.infos[-1]
    assert stale.agent_state == State.AGENT_STATE_NOT_RESPONDING
    assert stale.hostname == "guest-a"  # kept, never blanked
    assert stale.HasField("observed_time")
    reported = len(sink.infos)
    channel.check_heartbeat()
    assert len(sink.infos) == reported  # said once
    channel.feed(_heartbeat())
    assert sink.infos[-1].agent_state == State.AGENT_STATE_RESPONDING
    assert sink.infos[-1].hostname == "guest-a"


def test_no_report_is_passed_on_before_the_agent_has_reported() -> None:
    channel, sink, _ = _channel()
    channel.feed(_hello() + _hello() + _heartbeat())  # the agent says hello twice at start
    assert sink.infos == []
    channel.feed(_report())
    assert [i.agent_state for i in sink.infos] == [State.AGENT_STATE_RESPONDING]


def test_a_restarted_agent_is_responding_again_after_its_report() -> None:
    channel, sink, clock = _channel()
    channel.feed(_hello() + _report("before"))
    clock.now += 10
    channel.check_heartbeat()
    channel.feed(_hello())
    # a new agent's hello does not make the old agent's facts fresh...
    assert channel.agent_state == State.AGENT_STATE_NOT_RESPONDING
    channel.feed(_report("after"))
    # ...its first report does
    assert [(i.agent_state, i.hostname) for i in sink.infos[-2:]] == [
        (State.AGENT_STATE_NOT_RESPONDING, "before"),
        (State.AGENT_STATE_RESPONDING, "after"),
    ]


_LIMITS = ChannelLimits(max_messages_burst=1e9, max_messages_per_second=1e9)
_REPORT = _report()
_text = st.text(max_size=600)


@st.composite
def _hostile_report(draw: st.DrawFn) -> bytes:
    nic = st.builds(
        gc.NetworkInterface,
        name=_text,
        mac_address=_text,
        ipv4_addresses=st.lists(_text, max_size=40),
        ipv6_addresses=st.lists(_text, max_size=40),
    )
    report = gc.GuestReport(
        full=draw(st.booleans()),
        system=gc.SystemSection(
            hostname=draw(_text),
            uptime_seconds=draw(st.floats(allow_nan=True, allow_infinity=True)),
        ),
        os=gc.OsSection(name=draw(_text), version=draw(_text), kernel_release=draw(_text)),
        network=gc.NetworkSection(interfaces=draw(st.lists(nic, max_size=40))),
        applications=gc.ApplicationsSection(applications=draw(st.lists(_text, max_size=50))),
    )
    return _frame(
        gc.GuestMessage(sent_unix_nanos=draw(st.integers(-(2**63), 2**63 - 1)), report=report)
    )


def _clean(value: str, limit: int) -> bool:
    return len(value) <= limit and all(unicodedata.category(ch)[0] != "C" for ch in value)


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    garbage=st.binary(max_size=1500),
    cuts=st.lists(st.integers(0, 1500), max_size=4),
    split=st.integers(7, 700),
)
def test_any_byte_sequence_is_survived_with_bounded_memory(
    garbage: bytes, cuts: list[int], split: int
) -> None:
    channel, sink, _ = _channel(_LIMITS)
    # valid frames, whole or cut short, among the garbage, read in any split
    stream = _hello()
    last = 0
    for cut in sorted(cuts):
        stream += garbage[last:cut] + _REPORT[: (cut % 3) * len(_REPORT) // 2]
        last = cut
    stream += garbage[last:]
    for start in range(0, len(stream), split):
        channel.feed(stream[start : start + split])
        assert len(channel._decoder._buf) <= HEADER_SIZE + _LIMITS.max_payload
    channel.feed(_report("still-alive"))
    assert sink.infos[-1].hostname == "still-alive"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames=st.lists(_hostile_report(), min_size=1, max_size=3))
def test_hostile_reports_come_out_clean_and_capped(frames: list[bytes]) -> None:
    channel, sink, _ = _channel(_LIMITS)
    channel.feed(_hello() + b"".join(frames))
    limit = _LIMITS.max_string
    for info in sink.infos:
        texts = [info.hostname, info.os_name, info.os_version, info.kernel_release]
        texts += list(info.applications)
        for nic in info.interfaces:
            texts += [nic.name, nic.mac_address, *nic.ipv4_addresses, *nic.ipv6_addresses]
            assert len(nic.ipv4_addresses) <= _LIMITS.max_addresses
        assert all(_clean(t, limit) for t in texts)
        assert len(info.interfaces) <= _LIMITS.max_interfaces
        assert 0 <= info.uptime_seconds < float("inf")


def _last_hostname_is(sink: Sink, hostname: str) -> bool:
    return bool(sink.infos) and sink.infos[-1].hostname == hostname


async def test_a_flooding_guest_does_not_hold_up_another(short_tmp: Path) -> None:
    limits = ChannelLimits(
        max_bytes_per_second=64 * 1024, max_bytes_burst=64 * 1024, connect_timeout_seconds=30
    )
    flooder, quiet = FakeGuest(short_tmp / "flood.sock"), FakeGuest(short_tmp / "quiet.sock")
    await flooder.start()
    await quiet.start()
    flood_sink, quiet_sink = Sink(), Sink()
    channels = [
        GuestChannel("flood", flooder.path, limits, flood_sink),
        GuestChannel("quiet", quiet.path, limits, quiet_sink),
    ]
    tasks = [asyncio.create_task(c.run()) for c in channels]
    stop = asyncio.Event()

    async def flood() -> None:
        await flooder.next_message("HostHello")
        junk = (b"\xf0VPG" + bytes(range(256)) * 64) + encode(b"\xff" * 60_000)
        while not stop.is_set():
            await flooder.send_raw(junk)

    flooding = asyncio.create_task(flood())
    try:
        await quiet.next_message("HostHello")
        await quiet.send(gc.GuestMessage(hello=gc.GuestHello(min_version=1, max_version=1)))
        await quiet.next_message("VersionChoice")
        for n in range(20):
            await quiet.send(
                gc.GuestMessage(
                    report=gc.GuestReport(full=True, system=gc.SystemSection(hostname=f"q{n}"))
                )
            )
            await until(partial(_last_hostname_is, quiet_sink, f"q{n}"), what=f"report {n}")
        await until(lambda: channels[0].throttled_seconds > 0, what="the flooder throttled")
    finally:
        stop.set()
        for task in (*tasks, flooding):
            task.cancel()
        await asyncio.gather(*tasks, flooding, return_exceptions=True)
        await flooder.close()
        await quiet.close()
    # The flooder never reported: all the sink heard is that it is throttled, and why.
    assert [i.channel_state for i in flood_sink.infos] == [ChannelState.CHANNEL_STATE_THROTTLED]
    assert "over its budget" in flood_sink.infos[0].channel_message
    assert not flood_sink.infos[0].hostname
    assert {i.channel_state for i in quiet_sink.infos} == {ChannelState.CHANNEL_STATE_OK}
