"""Hostile guests through the whole stack (issue 12): a controller and a hostd
of their own, three real guests booted together, each running one attack of
tools/guest-image/hostile.py (`virtplane.hostile=SECONDS:MODE`):

- `reports`: maximal valid full reports as fast as its port takes. hostd's
  memory stays bounded, the VM's GuestInfo stays under 256 KiB, and the
  controller writes that VM's reports at most about once a second (each
  write gives the VM a new revision, so the watch sees every one);
- the same guest's facts outweigh hostd's list budget (lowered here with
  --list-guest-budget-bytes): ListVms succeeds without them and the host
  stays UP;
- `frames`: crafted frames (nested headers, garbage to resync through); the
  `version` guest on the same hostd keeps its heartbeat on time;
- `version`: an agent version of control and bidi characters; the VM is
  stopped and started again through the controller and comes UP with a report.

hostd runs with --journal-max-bytes lowered, so that the reports' events
overflow it during the test; what its journal keeps is weighed through
WatchEvents. The modes need a guest image built from this tree (make
guest-image).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import pairwise

import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import vm_pb2

import virtplane_client as vp
from tests.support.events import HostEvents
from tests.support.guests import WAIT, Api, guest_spec
from tests.support.procfs import rss_kib
from tests.support.real import GuestImage
from tests.support.stack import Stack, start_controller, start_host
from virtplane_common.limits import MAX_AGENT_VERSION

pytestmark = pytest.mark.guest

WINDOW = 12.0
"""How long each attack is watched, in seconds."""
ATTACK_SECONDS = 600
"""The floods last this long at most; the module stops their VMs sooner."""
GUEST_INFO_CAP = 256 * 1024
LIST_BUDGET = 128 * 1024
"""hostd's list budget here: the flooding guest's facts alone outweigh it."""
JOURNAL_MAX_BYTES = 1024 * 1024
MAX_RSS_GROWTH_KIB = 64 * 1024
HEARTBEAT = 1.0
MAX_GAP = 3 * HEARTBEAT + 2.0
"""hostd calls an agent NOT_RESPONDING past 3 intervals; 2 s of slack for the poll."""


@dataclass
class Hostile:
    api: Api
    stack: Stack
    hostd: pb_grpc.HostAgentServiceAsyncStub
    reports: str
    frames: str
    version: str


@pytest.fixture(scope="module")
def hostile_stack(system_libvirt: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("hostile")
    workdir.chmod(0o755)
    controller = start_controller(workdir, plaintext_hosts=False)
    try:
        extra = (
            "--journal-max-bytes", str(JOURNAL_MAX_BYTES),
            "--list-guest-budget-bytes", str(LIST_BUDGET),
        )  # fmt: skip
        hostd = start_host(controller, workdir, "local", system_libvirt, extra)
    except Exception:
        controller.stop()
        raise
    stack = Stack(workdir, controller, hostd)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def hostile(hostile_stack: Stack, guest_image: GuestImage) -> AsyncIterator[Hostile]:
    api = await Api.open(hostile_stack)
    channel = hostile_stack.hostd.channel()
    ids: dict[str, str] = {}

    async def boot(mode: str) -> None:
        spec = guest_spec(guest_image)
        extra = f" virtplane.hostile={ATTACK_SECONDS}:{mode}"
        boot = dataclasses.replace(spec.boot, cmdline=spec.boot.cmdline + extra)
        created = await api.client.vms.create(
            f"hostile-{mode}-{os.getpid()}", dataclasses.replace(spec, boot=boot)
        )
        ids[mode] = created.id
        await api.client.vms.start(created.id)

    try:
        await asyncio.gather(*(boot(mode) for mode in ("reports", "frames", "version")))
        yield Hostile(
            api,
            hostile_stack,
            pb_grpc.HostAgentServiceStub(channel),
            ids["reports"],
            ids["frames"],
            ids["version"],
        )
    finally:
        for vm_id in ids.values():
            with contextlib.suppress(vp.ClientError):
                await api.client.vms.stop(vm_id)
        await channel.close(None)
        await api.close()


def _reported(vm: vp.Vm) -> bool:
    return (
        vm.status.state == vp.VmState.UP
        and vm.status.guest is not None
        and vm.status.guest.observed_time is not None
    )


async def _hostd_guests(h: Hostile) -> dict[str, pb.HostVm]:
    reply = await h.hostd.ListVms(pb.HostAgentServiceListVmsRequest(), timeout=10)
    return {vm.vm_id: vm for vm in reply.vms}


async def _first_answer(h: Hostile, after: int, epoch: str) -> pb.WatchEventsResponse:
    call = h.hostd.WatchEvents(
        pb.WatchEventsRequest(after_sequence=after, host_epoch=epoch), timeout=10
    )
    try:
        async for answer in call:
            return answer
    finally:
        call.cancel()
    raise AssertionError("WatchEvents ended without an answer")


async def _kept_journal(h: Hostile) -> tuple[int, int]:
    """The oldest event hostd's journal keeps, and what the kept events weigh.

    Read through WatchEvents alone: resuming from before the oldest kept
    event brings a snapshot first, so a bisection finds it; the events from
    there to the last one listed are read and weighed. (Events pushed out
    while they are read are skipped, never counted twice.)
    """
    listing = await h.hostd.ListVms(pb.HostAgentServiceListVmsRequest(), timeout=10)
    epoch, last = listing.host_epoch, listing.sequence
    low, high = 0, last - 1  # the first cursor from which no snapshot is needed
    while low < high:
        middle = (low + high) // 2
        if (await _first_answer(h, middle, epoch)).HasField("snapshot"):
            low = middle + 1
        else:
            high = middle
    weight = 0
    call = h.hostd.WatchEvents(pb.WatchEventsRequest(after_sequence=low, host_epoch=epoch))
    try:
        async for answer in call:
            assert answer.HasField("event")
            weight += answer.event.ByteSize()
            if answer.event.sequence >= last:
                break
    finally:
        call.cancel()
    return low + 1, weight


async def test_maximal_reports_keep_hostd_and_the_controller_bounded(hostile: Hostile) -> None:
    h = hostile
    await h.api.watch.wait_for(h.reports, _reported, WAIT)
    pid = h.stack.hostd.process.pid
    rss_before = rss_max = rss_kib(pid)
    before = await h.hostd.GetVmGuestReport(
        pb.HostAgentServiceGetVmGuestReportRequest(vm_id=h.reports)
    )
    mark = h.api.watch.mark()
    events = HostEvents.of_stub(h.hostd, WAIT)
    end = time.monotonic() + WINDOW
    while time.monotonic() < end:
        rss_max = max(rss_max, rss_kib(pid))
        await asyncio.sleep(0.2)
    await events.close()
    writes = [c for c in h.api.watch.events[mark:] if c.vm is not None and c.vm.id == h.reports]
    after = await h.hostd.GetVmGuestReport(
        pb.HostAgentServiceGetVmGuestReportRequest(vm_id=h.reports)
    )
    info = await h.api.client.vms.guest_report(h.reports)
    oldest, kept = await _kept_journal(h)
    sizes = [e.guest_report.guest.ByteSize() for e in events.reports(h.reports)]
    flood = after.channel.bytes_received - before.channel.bytes_received
    print(
        f"\nreports: hostd read {flood / 2**20:.1f} MiB in {WINDOW:g} s; hostd sent"
        f" {len(sizes)} reports of it, the controller wrote it {len(writes)} times;"
        f" hostd RSS {rss_before / 1024:.0f} -> max {rss_max / 1024:.0f} MiB;"
        f" the journal keeps {kept / 2**20:.1f} MiB from event {oldest}"
    )
    assert flood > 4 * GUEST_INFO_CAP  # the attack went on all along
    # one write a second at most, however often hostd sends (about 1.5/s here)
    assert 1 <= len(writes) <= WINDOW / 1.0 + 2
    assert rss_max - rss_before < MAX_RSS_GROWTH_KIB
    assert h.stack.hostd.process.poll() is None
    # the journal overflowed and kept no more than its cap
    assert oldest > 1 and kept <= JOURNAL_MAX_BYTES
    assert info.guest is not None
    # every GuestInfo hostd sent of the VM is capped
    assert sizes and max(sizes) <= GUEST_INFO_CAP


async def test_facts_past_the_list_budget_leave_the_host_up(hostile: Hostile) -> None:
    h = hostile
    await h.api.watch.wait_for(h.reports, _reported, WAIT)
    guests = await _hostd_guests(h)
    # listed, without the facts that outweigh the budget
    assert h.reports in guests and not guests[h.reports].HasField("guest")
    host = await h.api.client.hosts.get("local")
    assert host.status.state == vp.HostState.UP
    # and the controller keeps the facts it stored
    vm = await h.api.client.vms.get(h.reports)
    assert vm.status.state == vp.VmState.UP and vm.status.guest is not None


async def test_crafted_frames_leave_another_vms_heartbeat_on_time(hostile: Hostile) -> None:
    h = hostile
    await h.api.watch.wait_for(h.frames, _reported, WAIT)
    await h.api.watch.wait_for(h.version, _reported, WAIT)
    mark = h.api.watch.mark()
    heard: list[float] = []
    agent_states: set[int] = set()
    end = time.monotonic() + WINDOW
    while time.monotonic() < end:
        vm = (await _hostd_guests(h))[h.version]
        agent_states.add(vm.guest.agent_state)
        stamp = vm.guest.last_heard_time.ToNanoseconds() / 1e9
        if not heard or stamp != heard[-1]:
            heard.append(stamp)
        await asyncio.sleep(0.2)
    frames = await h.hostd.GetVmGuestReport(
        pb.HostAgentServiceGetVmGuestReportRequest(vm_id=h.frames)
    )
    gaps = [b - a for a, b in pairwise(heard)]
    print(
        f"\nframes: hostd skipped {frames.channel.discarded_bytes / 2**20:.1f} MiB of crafted"
        f" bytes; the other agent's heartbeats: {len(heard)}, largest gap"
        f" {max(gaps, default=0):.2f} s (bound {MAX_GAP:g} s)"
    )
    assert frames.channel.discarded_bytes > 0
    assert len(heard) >= WINDOW / (2 * HEARTBEAT)
    assert max(gaps) <= MAX_GAP
    assert agent_states == {vm_pb2.GuestInfo.AgentState.AGENT_STATE_RESPONDING}
    # the controller never saw it other than UP and responding
    changes = [c.vm for c in h.api.watch.events[mark:] if c.vm is not None]
    for seen in (v for v in changes if v.id == h.version):
        assert seen.status.state == vp.VmState.UP
        assert seen.status.guest is not None
        assert seen.status.guest.agent_state == vp.AgentState.RESPONDING


def _clean_version(version: str) -> bool:
    """The hostile agent's version, cleaned: what it had of printable kept,
    its escapes, controls and bidi marks gone, and cut to length."""
    return (
        version.startswith("[2J1.0") and len(version) <= MAX_AGENT_VERSION and version.isprintable()
    )


async def test_a_bad_agent_version_does_not_stop_the_vm_from_starting_again(
    hostile: Hostile,
) -> None:
    h = hostile
    up = await h.api.watch.wait_for(h.version, _reported, WAIT)
    assert up.status.guest is not None and _clean_version(up.status.guest.agent_version)
    await h.api.client.vms.stop(h.version)
    await h.api.watch.wait_for(h.version, lambda vm: vm.status.state == vp.VmState.DOWN, WAIT)
    mark = h.api.watch.mark()
    await h.api.client.vms.start(h.version)
    _, again = await h.api.watch.next_vm(h.version, _reported, "UP again with a report", mark)
    assert again.status.guest is not None
    assert _clean_version(again.status.guest.agent_version)
