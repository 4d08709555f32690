"""A hostile guest on a real hostd process: it floods its channel, and hostd
stays healthy while another VM's agent keeps its heartbeat.

Two real guests boot together on one hostd (a process of its own, so that
its memory can be read): the hostile one runs tools/guest-image/hostile.py
(`virtplane.hostile=SECONDS` on its kernel command line: garbage, oversize
frames, nested headers, huge valid reports and thousands of tiny messages),
the normal one runs guestd with a 1 s heartbeat. While the flood goes on,
the test polls hostd's ListVms every 0.1 s and records when hostd last heard
the normal agent.

The bounds asserted are correctness bounds, not performance figures:
- the normal agent is not starved: no gap between two of its heartbeats, as
  hostd received them, exceeds 3 heartbeat intervals plus 2 s of slack
  (hostd itself would call it NOT_RESPONDING past 3 intervals);
- hostd answers every ListVms within 10 s;
- hostd's resident memory grows by less than 100 MiB over the flood (what a
  channel may hold is bounded by its frame size, a few hundred KiB);
- the hostile VM's channel is THROTTLED with the reason, its facts cleaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import unicodedata
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import grpc
import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import vm_pb2

from tests.hostd.guest_configs import guest_config
from tests.support.pki import TestPki
from tests.support.procfs import rss_kib
from tests.support.real import GuestImage
from tests.support.stack import Daemon, start_hostd
from tests.support.virt import remove_domains
from tests.support.waiting import until

pytestmark = pytest.mark.guest

BOOT_TIMEOUT = 240.0
"""Generous: two TCG guests boot at once on a shared machine."""
HEARTBEAT = 1.0
MAX_GAP = 3 * HEARTBEAT + 2.0
WINDOW = 30.0
"""How long the normal agent's heartbeats are watched during the flood."""
FLOOD_SECONDS = 600
"""The hostile agent floods this long at most; the test destroys it sooner."""
MAX_RSS_GROWTH_KIB = 100 * 1024
ChannelState = vm_pb2.GuestInfo.ChannelState
AgentState = vm_pb2.GuestInfo.AgentState


@dataclass
class Host:
    daemon: Daemon
    stub: pb_grpc.HostAgentServiceAsyncStub
    normal: pb.VmConfig
    hostile: pb.VmConfig


@pytest.fixture(scope="module")
def hostd(system_libvirt: str, state_root: Path) -> Iterator[Daemon]:
    state_root.chmod(0o755)
    daemon = start_hostd(state_root, system_libvirt, pki=TestPki(state_root / "pki"))
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
async def host(hostd: Daemon, guest_image: GuestImage, system_libvirt: str) -> AsyncIterator[Host]:
    channel = hostd.channel()
    host = Host(
        hostd,
        pb_grpc.HostAgentServiceStub(channel),
        guest_config(guest_image, "real-normal", f"virtplane.heartbeat={HEARTBEAT:g}"),
        guest_config(guest_image, "real-hostile", f"virtplane.hostile={FLOOD_SECONDS}"),
    )
    try:
        await asyncio.gather(
            *(
                host.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
                for config in (host.normal, host.hostile)
            )
        )
        yield host
    finally:
        for config in (host.normal, host.hostile):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await host.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id))
        await channel.close(None)
        # Quietly: hostd has usually removed them already.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        await asyncio.to_thread(
            remove_domains, system_libvirt, [host.normal.vm_id, host.hostile.vm_id]
        )


async def _guests(stub: pb_grpc.HostAgentServiceAsyncStub) -> dict[str, vm_pb2.GuestInfo]:
    reply = await stub.ListVms(pb.HostAgentServiceListVmsRequest(), timeout=10)
    return {vm.vm_id: vm.guest for vm in reply.vms}


async def _reported_and_throttled(host: Host) -> None:
    normal, hostile = host.normal.vm_id, host.hostile.vm_id
    await until(
        lambda: _guests(host.stub),
        lambda g: (
            g.get(normal, vm_pb2.GuestInfo()).HasField("observed_time")
            and g.get(hostile, vm_pb2.GuestInfo()).channel_state
            == ChannelState.CHANNEL_STATE_THROTTLED
        ),
        what="the normal agent's report and the hostile channel throttled",
        within=BOOT_TIMEOUT,
        every=0.2,
    )


def _clean(text: str) -> bool:
    return all(unicodedata.category(ch)[0] != "C" for ch in text)


@dataclass
class _Watched:
    """What WINDOW seconds of polling ListVms saw of the normal VM and of hostd."""

    rss_before: int
    rss_max: int
    heard: list[float] = field(default_factory=list)
    """The normal agent's distinct last_heard_time values, in order (seconds)."""
    states: set[int] = field(default_factory=set)
    slowest_answer: float = 0.0


async def _watch_the_normal_agent(host: Host, normal: str) -> _Watched:
    rss = rss_kib(host.daemon.process.pid)
    watched = _Watched(rss_before=rss, rss_max=rss)
    end = time.monotonic() + WINDOW
    while time.monotonic() < end:
        asked = time.monotonic()
        guests = await _guests(host.stub)
        watched.slowest_answer = max(watched.slowest_answer, time.monotonic() - asked)
        info = guests[normal]
        watched.states.add(info.agent_state)
        stamp = info.last_heard_time.ToNanoseconds() / 1e9
        if not watched.heard or stamp != watched.heard[-1]:
            watched.heard.append(stamp)
        watched.rss_max = max(watched.rss_max, rss_kib(host.daemon.process.pid))
        await asyncio.sleep(0.1)
    return watched


async def test_a_flooding_guest_is_throttled_and_starves_no_one(host: Host) -> None:
    normal, hostile = host.normal.vm_id, host.hostile.vm_id
    await _reported_and_throttled(host)
    report = host.stub.GetVmGuestReport
    before = (await report(pb.HostAgentServiceGetVmGuestReportRequest(vm_id=hostile))).channel
    watched = await _watch_the_normal_agent(host, normal)
    heard, states, slowest_answer = watched.heard, watched.states, watched.slowest_answer
    rss_before, rss_max = watched.rss_before, watched.rss_max
    after = await report(pb.HostAgentServiceGetVmGuestReportRequest(vm_id=hostile))
    guests = await _guests(host.stub)

    gaps = [b - a for a, b in pairwise(heard)]
    flood_bytes = after.channel.bytes_received - before.bytes_received
    print(
        f"\nflood: hostd read {flood_bytes / 2**20:.1f} MiB from the hostile guest in"
        f" {WINDOW:g} s, dropped {after.channel.dropped_messages} messages, skipped"
        f" {after.channel.discarded_bytes / 2**20:.1f} MiB of garbage, paused reading"
        f" {after.channel.throttled_seconds:.0f} s; the normal agent's heartbeats:"
        f" {len(heard)}, largest gap {max(gaps, default=0):.2f} s (bound {MAX_GAP:g} s);"
        f" slowest ListVms {slowest_answer * 1000:.0f} ms; hostd RSS"
        f" {rss_before / 1024:.0f} -> max {rss_max / 1024:.0f} MiB"
    )
    # the flood went on all along
    assert flood_bytes > 0
    # the normal agent kept its heartbeat
    assert len(heard) >= WINDOW / (2 * HEARTBEAT)
    assert max(gaps) <= MAX_GAP
    assert AgentState.AGENT_STATE_RESPONDING in states
    # hostd stayed healthy
    assert rss_max - rss_before < MAX_RSS_GROWTH_KIB
    assert host.daemon.process.poll() is None
    # the hostile channel: throttled, said why, its facts cleaned and capped
    flooder = guests[hostile]
    assert flooder.channel_state == ChannelState.CHANNEL_STATE_THROTTLED
    assert "over its budget" in flooder.channel_message
    assert after.channel.dropped_messages > 0
    assert after.channel.discarded_bytes > 0
    assert after.channel.throttled_seconds > 0
    assert len(flooder.hostname) <= 256 and _clean(flooder.hostname)
    assert len(flooder.applications) <= 4096
    assert all(_clean(app) and len(app) <= 256 for app in flooder.applications)
    assert flooder.uptime_seconds >= 0
    # and the normal VM's facts are whole
    assert guests[normal].os_name and guests[normal].interfaces
