"""A VM's guest reports reach the database at most once a second, the latest
winning and the last always written: a controller in this process, a real
hostd on libvirt's test driver, and a burst of reports fed to the host's
monitor as its event stream would."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from controller.coalescer import Coalescer
from db.models import Vm
from tests.support.controller_rig import Rig, spec
from tests.support.rig_hosts import add_test_host
from tests.support.served import Served
from tests.support.waiting import until

RECEIVED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _report(vm_id: str, hostname: str) -> agent_pb2.GuestReportEvent:
    observed = Timestamp()
    observed.GetCurrentTime()
    guest = vm_pb2.GuestInfo(
        hostname=hostname,
        observed_time=observed,
        agent_state=vm_pb2.GuestInfo.AGENT_STATE_RESPONDING,
    )
    return agent_pb2.GuestReportEvent(vm_id=vm_id, guest=guest)


async def test_a_burst_of_reports_is_one_write_then_the_last(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    host_id = (await add_test_host(rig, "h1", test_hostd)).id
    name = f"v-{uuid.uuid4().hex[:8]}"
    created = await rig.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec(boot)))
    vm_id = created.vm.id
    await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))
    monitor = rig.controller.hosts.monitor(host_id)
    coalescer = monitor.guest_reports
    before = coalescer.writes
    started = time.monotonic()
    for i in range(50):
        event = agent_pb2.HostEvent(guest_report=_report(vm_id, f"guest-{i}"))
        async with monitor._lock:
            await monitor._apply(event)
    # The first is written at once; the others wait, each replacing the last,
    # one write per second at most (however slow the machine).
    burst_writes = coalescer.writes - before
    assert 1 <= burst_writes <= 1 + int(time.monotonic() - started)

    def hostname(session: Session) -> object:
        vm = session.get(Vm, vm_id)
        assert vm is not None
        return next((f.value for f in vm.guest_facts if f.name == "hostname"), None)

    async def stored() -> object:
        return await rig.controller.db.run(hostname)

    assert await until(stored, lambda h: h == "guest-49") == "guest-49"
    assert coalescer.writes - before in (burst_writes, burst_writes + 1)  # the last, once


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_coalescer_writes_the_latest_once_per_interval() -> None:
    written: list[str] = []

    async def write(report: agent_pb2.GuestReportEvent, _received: dt.datetime) -> None:
        written.append(report.guest.hostname)

    clock = _Clock()
    coalescer = Coalescer(write, asyncio.Lock(), interval=0.05, monotonic=clock)
    await coalescer.offer(_report("a", "a0"), RECEIVED)
    await coalescer.offer(_report("b", "b0"), RECEIVED)  # another VM: its own interval
    for i in range(1, 20):
        await coalescer.offer(_report("a", f"a{i}"), RECEIVED)
    assert written == ["a0", "b0"]
    clock.now += 0.05
    await until(lambda: list(written), lambda w: len(w) == 3)
    assert written == ["a0", "b0", "a19"]
    assert (coalescer.writes, coalescer.coalesced) == (3, 18)


async def test_a_waiting_report_is_written_before_a_state_change_and_at_close() -> None:
    written: list[str] = []

    async def write(report: agent_pb2.GuestReportEvent, _received: dt.datetime) -> None:
        written.append(report.guest.hostname)

    coalescer = Coalescer(write, asyncio.Lock(), interval=3600)
    await coalescer.offer(_report("a", "first"), RECEIVED)
    await coalescer.offer(_report("a", "second"), RECEIVED)
    await coalescer.flush("a")  # the monitor does so before the VM's state event
    assert written == ["first", "second"]
    await coalescer.offer(_report("a", "third"), RECEIVED)
    await coalescer.close()
    assert written == ["first", "second", "third"]
