"""hostd bounds the request ids, addresses and host ids it is sent:
INVALID_ARGUMENT naming the field, before any work (a real grpc.aio server,
hostd, libvirt's test driver)."""

from __future__ import annotations

import grpc
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from tests.support import served as serving
from tests.support.hostd_rig import vm_config


async def _invalid(call: object) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.details() or ""


async def test_a_long_request_id_is_refused(
    served: serving.Served, boot_files: tuple[str, str]
) -> None:
    config = vm_config(boot_files[0])
    request = pb.HostAgentServiceCreateVmRequest(config=config, request_id="r" * 129)
    assert "request_id" in await _invalid(served.stub.CreateVm(request))
    listed = await served.stub.ListVms(pb.HostAgentServiceListVmsRequest())
    assert config.vm_id not in {vm.vm_id for vm in listed.vms}
    request = pb.HostAgentServiceCreateVmRequest(config=config, request_id="bad\nid")
    assert "printable" in await _invalid(served.stub.CreateVm(request))


async def test_long_addresses_are_refused(
    served: serving.Served, boot_files: tuple[str, str]
) -> None:
    far = "h" * 5000 + ":1"
    migrate = pb.HostAgentServiceMigrateVmRequest(vm_id="v", destination_address=far)
    assert "destination_address" in await _invalid(served.stub.MigrateVm(migrate))
    migrate = pb.HostAgentServiceMigrateVmRequest(
        vm_id="v", destination_address="h:1", destination_host_id="x" * 65
    )
    assert "destination_host_id" in await _invalid(served.stub.MigrateVm(migrate))
    prepare = pb.HostAgentServicePrepareIncomingMigrationRequest(
        config=vm_config(boot_files[0]), source_address=far
    )
    details = await _invalid(served.stub.PrepareIncomingMigration(prepare))
    assert "source_address" in details and "at most 260" in details
