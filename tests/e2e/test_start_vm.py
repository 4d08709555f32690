"""Starting a real VM through controller → hostd → libvirt, with guestd
reporting from inside the guest. The controller is driven through
virtplane_client; the snapshot test reads WatchVms' raw messages (it is
about their order on the wire), and hostd's GetVmStats is called on its stub."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Awaitable

import grpc
import pytest
from virtplane.v1 import host_agent_service_pb2 as agent_api
from virtplane.v1 import host_agent_service_pb2_grpc as agent_grpc
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

import virtplane_client as vp
from tests.support.guests import Api, guest_reported, guest_spec
from tests.support.real import GuestImage
from tests.support.stack import Stack, workdir_db
from tests.support.virt import disks_of, domain_exists, live_xml

S = vp.VmState
pytestmark = pytest.mark.guest


async def test_vm_goes_up_reports_its_guest_and_stops(
    stack: Stack, api: Api, guest_image: GuestImage, system_libvirt: str
) -> None:
    created = await api.client.vms.create("lifecycle", guest_spec(guest_image))
    vm_id = created.id
    assert created.status.state == S.DOWN

    started = await api.client.vms.start("lifecycle")
    assert started.vm.status.host_id == api.host_id
    assert started.vm.status.state in (S.WAIT_FOR_LAUNCH, S.POWERING_UP, S.UP)

    up = await api.watch.wait_for(vm_id, guest_reported)
    assert up.status.state == S.UP
    states = api.watch.states(vm_id)
    assert states[:2] == [S.DOWN, S.WAIT_FOR_LAUNCH]
    assert states.index(S.POWERING_UP) < states.index(S.UP)

    guest = up.status.guest
    assert guest is not None
    assert "10.0.2.15" in [a for i in guest.interfaces for a in i.ipv4_addresses]
    assert guest.os_name and guest.kernel_release
    assert guest.application_count == len(guest.applications) > 0
    assert any(app.startswith("virtplane-guestd ") for app in guest.applications)
    assert guest.uptime_seconds > 0
    assert guest.last_report_time is not None

    # The report is in the controller's database, each fact with its source.
    with sqlite3.connect(workdir_db(stack)) as db:
        facts = dict(
            db.execute("SELECT name, source FROM guest_facts WHERE vm_id = ?", (vm_id,)).fetchall()
        )
    from_guest = {name for name, source in facts.items() if source == "guestd"}
    assert {"hostname", "os", "interfaces", "applications", "uptime_seconds"} <= from_guest
    assert facts["agent"] == "hostd"  # the agent's own state is hostd's word
    assert guest.agent_state == vp.AgentState.RESPONDING
    assert domain_exists(system_libvirt, vm_id)

    stopped = await api.client.vms.stop(vm_id)
    assert stopped.vm.status.state == S.DOWN
    assert stopped.vm.status.exit_reason == vp.ExitReason.USER_STOP
    down = await api.watch.wait_for(vm_id, lambda v: v.status.state == S.DOWN)
    assert down.status.host_id == ""
    assert not domain_exists(system_libvirt, vm_id)


async def _code(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The status code and the server's message of the error call ends with."""
    with pytest.raises(vp.RpcError) as err:
        await call
    return err.value.code, err.value.message


async def test_start_of_an_unknown_vm_is_not_found(api: Api) -> None:
    code, detail = await _code(api.client.vms.start("no-such-vm"))
    assert code is grpc.StatusCode.NOT_FOUND
    assert "no-such-vm" in detail


async def test_the_shared_vm_runs_with_its_disk(
    api: Api, up_vm: vp.Vm, stack: Stack, shared_disk: str, system_libvirt: str
) -> None:
    vm = await api.client.vms.get(up_vm.id)
    assert [(d.name, d.path) for d in vm.spec.disks] == [("data0", shared_disk)]
    live = await asyncio.to_thread(live_xml, system_libvirt, up_vm.id)
    assert disks_of(live) == [("qcow2", shared_disk, "vda", False)]
    async with stack.hostd.channel() as channel:
        host = agent_grpc.HostAgentServiceStub(channel)
        reply = await host.GetVmStats(agent_api.HostAgentServiceGetVmStatsRequest(vm_id=up_vm.id))
    [disk] = reply.stats.disks
    assert (disk.name, disk.path) == ("vda", shared_disk)


async def test_start_of_an_up_vm_names_its_state(api: Api, up_vm: vp.Vm) -> None:
    code, detail = await _code(api.client.vms.start(up_vm.id))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "it is UP" in detail


async def test_create_without_memory_names_the_field(api: Api, guest_image: GuestImage) -> None:
    spec = dataclasses.replace(guest_spec(guest_image), memory_mib=0)  # 0: not set
    code, detail = await _code(api.client.vms.create("nomem", spec))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert detail.startswith("spec.memory_mib:")


async def test_start_with_no_host_that_fits_says_why(api: Api, guest_image: GuestImage) -> None:
    huge = guest_spec(guest_image, memory_mib=1024 * 1024)
    await api.client.vms.create("huge", huge)
    code, detail = await _code(api.client.vms.start("huge"))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "local: memory: needs 1048576 MiB" in detail
    vm = await api.client.vms.get("huge")
    assert vm.status.state == S.DOWN  # nothing was booked


async def test_watch_starts_with_a_snapshot(api: Api, up_vm: vp.Vm) -> None:
    # The raw stub: this is about the messages WatchVms sends, in their order.
    call = vm_grpc.VmServiceStub(api.client.channel).WatchVms(vm_api.WatchVmsRequest())
    kinds = []
    async for msg in call:
        kinds.append(msg.kind)
        if msg.kind == vm_api.WatchVmsResponse.KIND_SNAPSHOT_COMPLETE:
            break
    call.cancel()
    assert kinds[-1] == vm_api.WatchVmsResponse.KIND_SNAPSHOT_COMPLETE
    assert set(kinds[:-1]) == {vm_api.WatchVmsResponse.KIND_SNAPSHOT}
    await asyncio.sleep(0)


async def test_guest_info_lists_each_fact_with_its_source_and_time(api: Api, up_vm: vp.Vm) -> None:
    reply = await api.client.vms.guest_report(up_vm.name)
    facts = {f.name: f for f in reply.facts}
    assert facts["hostname"].source == "guestd"
    assert facts["agent"].source == "hostd"
    assert '"RESPONDING"' in facts["agent"].value_json
    assert all(f.observed_time is not None and f.received_time is not None for f in reply.facts)
    assert "10.0.2.15" in facts["interfaces"].value_json
    assert reply.guest is not None and up_vm.status.guest is not None
    assert reply.guest.hostname == up_vm.status.guest.hostname


async def test_pause_resume_and_reboot_through_the_api(api: Api, up_vm: vp.Vm) -> None:
    paused = await api.client.vms.pause(up_vm.id)
    assert paused.vm.status.state == S.PAUSED
    code, detail = await _code(api.client.vms.pause(up_vm.id))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "it is PAUSED" in detail
    resumed = await api.client.vms.resume(up_vm.id)
    assert resumed.vm.status.state == S.UP

    rebooting = await api.client.vms.reboot(up_vm.id)
    assert rebooting.vm.status.state == S.REBOOT_IN_PROGRESS
    since = api.watch.mark()
    up = await api.watch.wait_for(
        up_vm.id,
        lambda v: v.status.state == S.UP and v.status.revision > rebooting.vm.status.revision,
    )
    assert up.status.host_id == up_vm.status.host_id
    assert S.DOWN not in api.watch.states(up_vm.id, since)  # a reboot never looks like a stop
