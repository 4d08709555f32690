"""Starting a real VM through controller → hostd → libvirt, with guestd
reporting from inside the guest."""

from __future__ import annotations

import asyncio
import sqlite3

import grpc
import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as agent_api
from virtplane.v1 import host_agent_service_pb2_grpc as agent_grpc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from tests.support.guests import Api, reported, vm_spec
from tests.support.real import GuestImage
from tests.support.stack import Stack, workdir_db
from tests.support.virt import disks_of, domain_exists

S = vm_pb2.Vm
pytestmark = pytest.mark.guest


async def test_vm_goes_up_reports_its_guest_and_stops(
    stack: Stack, api: Api, guest_image: GuestImage, system_libvirt: str
) -> None:
    created = await api.vms.CreateVm(
        vm_api.CreateVmRequest(name="lifecycle", spec=vm_spec(guest_image))
    )
    vm_id = created.vm.id
    assert created.vm.status.state == S.STATE_DOWN

    started = await api.vms.StartVm(vm_api.StartVmRequest(vm="lifecycle"))
    assert started.vm.status.host_id == api.host_id
    assert started.vm.status.state in (S.STATE_WAIT_FOR_LAUNCH, S.STATE_POWERING_UP, S.STATE_UP)

    up = await api.watch.wait_for(vm_id, reported)
    assert up.status.state == S.STATE_UP
    states = api.watch.states(vm_id)
    assert states[:2] == [S.STATE_DOWN, S.STATE_WAIT_FOR_LAUNCH]
    assert states.index(S.STATE_POWERING_UP) < states.index(S.STATE_UP)

    guest = up.status.guest
    assert "10.0.2.15" in [a for i in guest.interfaces for a in i.ipv4_addresses]
    assert guest.os_name and guest.kernel_release
    assert guest.application_count == len(guest.applications) > 0
    assert any(app.startswith("virtplane-guestd ") for app in guest.applications)
    assert guest.uptime_seconds > 0
    assert guest.HasField("last_report_time")

    # The report is in the controller's database, each fact with its source.
    with sqlite3.connect(workdir_db(stack)) as db:
        facts = dict(
            db.execute("SELECT name, source FROM guest_facts WHERE vm_id = ?", (vm_id,)).fetchall()
        )
    from_guest = {name for name, source in facts.items() if source == "guestd"}
    assert {"hostname", "os", "interfaces", "applications", "uptime_seconds"} <= from_guest
    assert facts["agent"] == "hostd"  # the agent's own state is hostd's word
    assert guest.agent_state == vm_pb2.GuestInfo.AGENT_STATE_RESPONDING
    assert domain_exists(system_libvirt, vm_id)

    stopped = await api.vms.StopVm(vm_api.StopVmRequest(vm=vm_id))
    assert stopped.vm.status.state == S.STATE_DOWN
    assert stopped.vm.status.exit_reason == S.EXIT_REASON_USER_STOP
    down = await api.watch.wait_for(vm_id, lambda v: v.status.state == S.STATE_DOWN)
    assert down.status.host_id == ""
    assert not domain_exists(system_libvirt, vm_id)


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value.code(), err.value.details() or ""


async def test_start_of_an_unknown_vm_is_not_found(api: Api) -> None:
    code, detail = await _code(api.vms.StartVm(vm_api.StartVmRequest(vm="no-such-vm")))
    assert code is grpc.StatusCode.NOT_FOUND
    assert "no-such-vm" in detail


async def test_the_shared_vm_runs_with_its_disk(
    api: Api, up_vm: vm_pb2.Vm, stack: Stack, shared_disk: str, system_libvirt: str
) -> None:
    vm = (await api.vms.GetVm(vm_api.GetVmRequest(vm=up_vm.id))).vm
    assert [(d.name, d.path) for d in vm.spec.disks] == [("data0", shared_disk)]
    live = await asyncio.to_thread(_live_xml, system_libvirt, up_vm.id)
    assert disks_of(live) == [("qcow2", shared_disk, "vda", False)]
    async with grpc.aio.insecure_channel(stack.hostd.address) as channel:
        host = agent_grpc.HostAgentServiceStub(channel)
        reply = await host.GetVmStats(agent_api.HostAgentServiceGetVmStatsRequest(vm_id=up_vm.id))
    [disk] = reply.stats.disks
    assert (disk.name, disk.path) == ("vda", shared_disk)


def _live_xml(uri: str, vm_id: str) -> str:
    conn = libvirt.open(uri)
    try:
        return str(conn.lookupByUUIDString(vm_id).XMLDesc())
    finally:
        conn.close()


async def test_start_of_an_up_vm_names_its_state(api: Api, up_vm: vm_pb2.Vm) -> None:
    code, detail = await _code(api.vms.StartVm(vm_api.StartVmRequest(vm=up_vm.id)))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "it is UP" in detail


async def test_create_without_memory_names_the_field(api: Api, guest_image: GuestImage) -> None:
    spec = vm_spec(guest_image)
    spec.ClearField("memory_mib")
    code, detail = await _code(api.vms.CreateVm(vm_api.CreateVmRequest(name="nomem", spec=spec)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert detail.startswith("spec.memory_mib:")


async def test_start_with_no_host_that_fits_says_why(api: Api, guest_image: GuestImage) -> None:
    huge = vm_spec(guest_image, memory_mib=1024 * 1024)
    await api.vms.CreateVm(vm_api.CreateVmRequest(name="huge", spec=huge))
    code, detail = await _code(api.vms.StartVm(vm_api.StartVmRequest(vm="huge")))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "local: memory: needs 1048576 MiB" in detail
    vm = await api.vms.GetVm(vm_api.GetVmRequest(vm="huge"))
    assert vm.vm.status.state == S.STATE_DOWN  # nothing was booked


async def test_watch_starts_with_a_snapshot(api: Api, up_vm: vm_pb2.Vm) -> None:
    call = api.vms.WatchVms(vm_api.WatchVmsRequest())
    kinds = []
    async for msg in call:
        kinds.append(msg.kind)
        if msg.kind == vm_api.WatchVmsResponse.KIND_SNAPSHOT_COMPLETE:
            break
    call.cancel()
    assert kinds[-1] == vm_api.WatchVmsResponse.KIND_SNAPSHOT_COMPLETE
    assert set(kinds[:-1]) == {vm_api.WatchVmsResponse.KIND_SNAPSHOT}
    await asyncio.sleep(0)


async def test_guest_info_lists_each_fact_with_its_source_and_time(
    api: Api, up_vm: vm_pb2.Vm
) -> None:
    reply = await api.vms.GetVmGuestInfo(vm_api.GetVmGuestInfoRequest(vm=up_vm.name))
    facts = {f.name: f for f in reply.facts}
    assert facts["hostname"].source == "guestd"
    assert facts["agent"].source == "hostd"
    assert '"RESPONDING"' in facts["agent"].value_json
    assert all(f.HasField("observed_time") and f.HasField("received_time") for f in reply.facts)
    assert "10.0.2.15" in facts["interfaces"].value_json
    assert reply.guest.hostname == up_vm.status.guest.hostname


async def test_pause_resume_and_reboot_through_the_api(api: Api, up_vm: vm_pb2.Vm) -> None:
    paused = await api.vms.PauseVm(vm_api.PauseVmRequest(vm=up_vm.id))
    assert paused.vm.status.state == S.STATE_PAUSED
    code, detail = await _code(api.vms.PauseVm(vm_api.PauseVmRequest(vm=up_vm.id)))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "it is PAUSED" in detail
    resumed = await api.vms.ResumeVm(vm_api.ResumeVmRequest(vm=up_vm.id))
    assert resumed.vm.status.state == S.STATE_UP

    rebooting = await api.vms.RebootVm(vm_api.RebootVmRequest(vm=up_vm.id))
    assert rebooting.vm.status.state == S.STATE_REBOOT_IN_PROGRESS
    since = len(api.watch.events)
    up = await api.watch.wait_for(
        up_vm.id,
        lambda v: v.status.state == S.STATE_UP and v.status.revision > rebooting.vm.status.revision,
    )
    assert up.status.host_id == up_vm.status.host_id
    seen = [m.vm.status.state for m in api.watch.events[since:] if m.vm.id == up_vm.id]
    assert S.STATE_DOWN not in seen  # a reboot never looks like a stop
