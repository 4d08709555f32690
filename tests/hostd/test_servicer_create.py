"""HostAgentService end to end, creating and destroying: CreateVm, its checks and idempotency,
DestroyVm, disks.

A real grpc.aio server, hostd, libvirt's test driver (fixtures: served, small_journal).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd import domxml
from hostd.model import VmState
from hostd.server import Hostd
from tests.support import served as serving
from tests.support.hostd_rig import vm_config
from tests.support.virt import disks_of
from tests.support.waiting import until

S = pb.HostVm


async def test_create_watch_destroy(served: serving.Served, boot_files: tuple[str, str]) -> None:
    config = vm_config(boot_files[0], initrd=boot_files[1])
    async with serving.watching(served, pb.WatchEventsRequest(after_sequence=0)) as events:
        created = await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        assert created.vm.state == S.STATE_WAIT_FOR_LAUNCH
        states = await serving.vm_states(events, config.vm_id, 2)
        assert [s.state for s in states] == [S.STATE_WAIT_FOR_LAUNCH, S.STATE_RUNNING]
        listed = await served.stub.ListVms(pb.HostAgentServiceListVmsRequest())
        assert S(vm_id=config.vm_id, state=S.STATE_RUNNING) in listed.vms

        await served.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id))
        (down,) = await serving.vm_states(events, config.vm_id, 1)
        assert (down.state, down.exit_reason) == (S.STATE_DOWN, S.EXIT_REASON_DESTROYED)
        listed = await served.stub.ListVms(pb.HostAgentServiceListVmsRequest())
        assert config.vm_id not in {vm.vm_id for vm in listed.vms}


async def test_same_id_twice_is_already_exists(
    served: serving.Served, boot_files: tuple[str, str]
) -> None:
    config = vm_config(boot_files[0])
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert config.vm_id in (caught.value.details() or "")


async def test_missing_memory_is_invalid_argument(
    served: serving.Served, boot_files: tuple[str, str]
) -> None:
    config = vm_config(boot_files[0])
    config.spec.ClearField("memory_mib")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.spec.memory_mib" in (caught.value.details() or "")


async def test_destroying_an_unknown_vm_is_not_found(served: serving.Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.DestroyVm(
            pb.HostAgentServiceDestroyVmRequest(vm_id="6f1c9a52-3d0e-4b7a-9a51-0c2d8e4f7b13")
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_repeated_create_is_idempotent(
    served: serving.Served, boot_files: tuple[str, str]
) -> None:
    config = vm_config(boot_files[0])
    request = pb.HostAgentServiceCreateVmRequest(config=config, request_id="r-1")
    first = await served.stub.CreateVm(request)
    second = await served.stub.CreateVm(request)
    assert first.vm.vm_id == second.vm.vm_id == config.vm_id
    listed = await served.stub.ListVms(pb.HostAgentServiceListVmsRequest())
    assert [vm.vm_id for vm in listed.vms].count(config.vm_id) == 1


async def test_an_unsupported_console(served: serving.Served, boot_files: tuple[str, str]) -> None:
    caps = await served.stub.GetHostCapabilities(pb.GetHostCapabilitiesRequest())
    # libvirt's test driver offers no display.
    assert list(caps.consoles) == [pb.Console.KIND_NONE, pb.Console.KIND_SERIAL_FILE]
    config = vm_config(boot_files[0])
    config.console.kind = pb.Console.KIND_VNC
    await serving.expect_precondition(
        served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config)),
        "KIND_VNC is not supported on this host; supported: KIND_NONE, KIND_SERIAL_FILE",
    )


async def test_a_bad_disk_is_invalid_argument_and_creates_nothing(
    served: serving.Served, boot_files: tuple[str, str]
) -> None:
    config = serving.disk_config(boot_files)
    config.spec.disks[1].path = "/nonexistent/seed.img"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "config.spec.disks[1].path: is not an image file under hostd's image roots"
    )
    config.spec.disks[1].path = config.spec.disks[0].path
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("config.spec.disks[1].path: ")
    assert served.hostd.vms.list() == []
    assert not await asyncio.to_thread(serving.libvirt_test_xml, config.vm_id)


async def test_disks_reach_the_domain_and_survive_a_restart(
    served: serving.Served, boot_files: tuple[str, str]
) -> None:
    config = serving.disk_config(boot_files)
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    vms = served.hostd.vms
    await until(
        lambda: vms.get(config.vm_id).state == VmState.RUNNING, what="the VM with disks to run"
    )
    xml = await asyncio.to_thread(serving.libvirt_test_xml, config.vm_id)
    assert disks_of(xml) == [
        ("qcow2", boot_files[1], "vda", False),
        ("raw", boot_files[0], "vdb", True),
    ]
    # What a restarted hostd adopts the VM from: its configuration, disks included.
    metadata = domxml.metadata_in_domain(xml)
    assert metadata is not None
    kept = pb.VmConfig.FromString(metadata.config)
    assert [(d.name, d.format) for d in kept.spec.disks] == [
        ("root", vm_pb2.Disk.FORMAT_QCOW2),
        ("seed", vm_pb2.Disk.FORMAT_RAW),  # the default, filled in
    ]
    second = Hostd(served.hostd.config)  # the same libvirt (test:///default is shared)
    await second.start()
    try:
        adopted = second.vms.get(config.vm_id)
        assert (adopted.state, adopted.message) == (VmState.RUNNING, "recovered")
    finally:
        await second.stop(grace=1)
