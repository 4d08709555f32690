"""Guests with large reports never make their host look dead: a controller
in this process, a real hostd on libvirt's test driver, and fake agents on
the VMs' channel sockets sending reports near hostd's GuestInfo cap."""

from __future__ import annotations

import uuid

from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

import virtplane_client as vp
from tests.support.controller_rig import Rig, spec
from tests.support.fake_guest import FakeGuest
from tests.support.rig_hosts import add_test_host
from tests.support.served import Served
from tests.support.waiting import until


def _large_report(tag: str) -> gc.GuestMessage:
    apps = [f"{tag}-application-{i}-" + "z" * 30 for i in range(4096)]  # about 210 KiB
    report = gc.GuestReport(
        full=True,
        system=gc.SystemSection(hostname=tag),
        applications=gc.ApplicationsSection(applications=apps),
    )
    return gc.GuestMessage(report=report)


async def test_large_guest_reports_leave_the_host_up(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    host_id = (await add_test_host(rig, "h1", test_hostd)).id
    monitor = rig.controller.hosts.monitor(host_id)
    await until(monitor.connected.is_set, bool)
    count = 24  # over 4 MiB of guest facts in all, gRPC's default message limit
    guests: list[FakeGuest] = []
    ids: list[str] = []
    try:
        for _ in range(count):
            name = f"v-{uuid.uuid4().hex[:8]}"
            created = await rig.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec(boot)))
            ids.append(created.vm.id)
            guest = FakeGuest(test_hostd.hostd.layout.channel_socket(created.vm.id))
            await guest.start()
            guests.append(guest)
            await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))
            await guest.next_message("HostHello")
            await guest.send(gc.GuestMessage(hello=gc.GuestHello(min_version=1, max_version=1)))
            await guest.next_message("VersionChoice")
            await guest.send(_large_report(name))

        def reported() -> int:
            listed = test_hostd.hostd.vms.list()
            return sum(1 for vm in listed if vm.vm_id in ids and vm.guest and vm.guest.hostname)

        await until(reported, lambda n: n == count)
        # What the monitor does on every (re)connect and now and then: it must
        # not fail, and the host stays UP.
        async with monitor._lock:
            await monitor._reconcile()
        host = await rig.client.hosts.get("h1")
        assert host.status.state is vp.HostState.UP, host
        vm = await until(lambda: rig.client.vms.get(ids[-1]), lambda v: v.status.guest is not None)
        assert vm.status.guest is not None and len(vm.status.guest.applications) == 4096
    finally:
        for guest in guests:
            await guest.close()
        for vm_id in ids:
            await test_hostd.hostd.vms.destroy(vm_id)
