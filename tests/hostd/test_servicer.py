"""HostAgentService end to end: a real grpc.aio server, hostd, libvirt's test driver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import vm_pb2

from hostd.config import ChannelLimits, HostdConfig
from hostd.server import Hostd
from tests.hostd.conftest import FakeGuest, next_item, vm_config

S = pb.HostVm


@dataclass
class Served:
    hostd: Hostd
    stub: pb_grpc.HostAgentServiceAsyncStub


@pytest.fixture
async def served(short_tmp: Path) -> AsyncIterator[Served]:
    config = HostdConfig(
        listen="127.0.0.1:0",
        libvirt_uri="test:///default",
        state_dir=short_tmp / "state",
        virt_type="qemu",
        channel=ChannelLimits(connect_timeout_seconds=60),
    )
    hostd = Hostd(config)
    port = await hostd.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(hostd, pb_grpc.HostAgentServiceStub(channel))
    finally:
        for vm in hostd.vms.list():  # never leave domains behind
            await hostd.vms.destroy(vm.vm_id)
        await channel.close(None)
        await hostd.stop(grace=1)


async def _vm_states(
    events: AsyncIterator[pb.WatchEventsResponse], vm_id: str, count: int
) -> list[S]:
    states: list[S] = []
    while len(states) < count:
        event = (await next_item(events, f"state {len(states) + 1} of VM {vm_id}")).event
        if event.WhichOneof("payload") == "vm_state" and event.vm_state.vm_id == vm_id:
            states.append(event.vm_state)
    return states


async def test_create_watch_destroy(served: Served, boot_files: tuple[str, str]) -> None:
    config = vm_config(boot_files[0], initrd=boot_files[1])
    watch = served.stub.WatchEvents(pb.WatchEventsRequest(after_sequence=0))
    events = watch.__aiter__()
    try:
        created = await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        assert created.vm.state == S.STATE_WAIT_FOR_LAUNCH
        states = await _vm_states(events, config.vm_id, 2)
        assert [s.state for s in states] == [S.STATE_WAIT_FOR_LAUNCH, S.STATE_RUNNING]
        listed = await served.stub.ListVms(pb.HostAgentServiceListVmsRequest())
        assert S(vm_id=config.vm_id, state=S.STATE_RUNNING) in listed.vms

        await served.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id))
        (down,) = await _vm_states(events, config.vm_id, 1)
        assert (down.state, down.exit_reason) == (S.STATE_DOWN, S.EXIT_REASON_DESTROYED)
        listed = await served.stub.ListVms(pb.HostAgentServiceListVmsRequest())
        assert config.vm_id not in {vm.vm_id for vm in listed.vms}
    finally:
        watch.cancel()


async def test_watch_resumes_after_a_sequence(served: Served, boot_files: tuple[str, str]) -> None:
    config = vm_config(boot_files[0])
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    await served.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id))
    kept = served.hostd.journal.after(0)
    watch = served.stub.WatchEvents(pb.WatchEventsRequest(after_sequence=kept[0].sequence))
    try:
        first = await next_item(watch.__aiter__(), "the second event")
        assert first.event.sequence == kept[1].sequence
        assert first.event.host_epoch == served.hostd.journal.epoch
    finally:
        watch.cancel()


async def test_same_id_twice_is_already_exists(served: Served, boot_files: tuple[str, str]) -> None:
    config = vm_config(boot_files[0])
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert config.vm_id in (caught.value.details() or "")


async def test_missing_memory_is_invalid_argument(
    served: Served, boot_files: tuple[str, str]
) -> None:
    config = vm_config(boot_files[0])
    config.spec.ClearField("memory_mib")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.spec.memory_mib" in (caught.value.details() or "")


async def test_destroying_an_unknown_vm_is_not_found(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.DestroyVm(
            pb.HostAgentServiceDestroyVmRequest(vm_id="6f1c9a52-3d0e-4b7a-9a51-0c2d8e4f7b13")
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_host_capabilities(served: Served) -> None:
    caps = await served.stub.GetHostCapabilities(pb.GetHostCapabilitiesRequest())
    assert caps.hypervisor_type == "qemu"
    assert caps.cpus >= 1
    assert caps.memory_total_mib >= caps.memory_free_mib > 0
    assert caps.hostname


async def test_guest_reports_reach_the_watchers(
    served: Served, boot_files: tuple[str, str]
) -> None:
    # libvirt's test driver binds no socket: a fake agent listens where libvirt would.
    config = vm_config(boot_files[0])
    guest = FakeGuest(served.hostd.layout.channel_socket(config.vm_id))
    await guest.start()
    watch = served.stub.WatchEvents(pb.WatchEventsRequest())
    events = watch.__aiter__()
    try:
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        await guest.next_message("HostHello")
        await guest.send(gc.GuestMessage(hello=gc.GuestHello(min_version=1, max_version=1)))
        await guest.next_message("VersionChoice")
        report = gc.GuestReport(
            full=True,
            os=gc.OsSection(name="Debian GNU/Linux"),
            network=gc.NetworkSection(
                interfaces=[gc.NetworkInterface(name="eth0", ipv4_addresses=["10.0.2.15"])]
            ),
        )
        await guest.send(gc.GuestMessage(report=report))
        while True:
            event = (await next_item(events, "the guest report")).event
            if event.WhichOneof("payload") == "guest_report":
                break
        assert event.guest_report.vm_id == config.vm_id
        info: vm_pb2.GuestInfo = event.guest_report.guest
        assert info.os_name == "Debian GNU/Linux"
        assert list(info.interfaces[0].ipv4_addresses) == ["10.0.2.15"]
    finally:
        watch.cancel()
        await guest.close()


async def test_a_restarted_hostd_adopts_its_domains(
    served: Served, boot_files: tuple[str, str], short_tmp: Path
) -> None:
    config = vm_config(boot_files[0])
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    vms = served.hostd.vms
    while not any(vm.state == S.STATE_RUNNING for vm in vms.list()):
        events = served.hostd.journal.follow(served.hostd.journal.last_sequence)
        await next_item(events, "RUNNING")
    second = Hostd(served.hostd.config)  # the same libvirt (test:///default is shared)
    await second.start()
    try:
        adopted = second.vms.get(config.vm_id)
        assert (adopted.state, adopted.message) == (S.STATE_RUNNING, "recovered")
        assert "test" not in {vm.vm_id for vm in second.vms.list()}
    finally:
        await second.stop(grace=1)
