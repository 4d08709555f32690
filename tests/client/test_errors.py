"""A failed call is raised as the client exception of its status code,
carrying the code, the message, and the field or resource the message
names: unit checks of the translation, then the controller's own errors
(each engine)."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from virtplane_client import AsyncClient, VmSpec, VmState, VmUpdate, errors


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.ABORTED, errors.Aborted),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.CANCELLED, errors.Cancelled),
        (grpc.StatusCode.INTERNAL, errors.Internal),
        (grpc.StatusCode.UNIMPLEMENTED, errors.Internal),
    ],
)
def test_each_code_has_its_class_and_keeps_the_code(
    code: grpc.StatusCode, cls: type[errors.RpcError]
) -> None:
    exc = errors.from_rpc_error(_rpc_error(code, "it failed"))
    assert type(exc) is cls and isinstance(exc, errors.ClientError)
    assert (exc.code, exc.message, exc.field) == (code, "it failed", None)
    assert str(exc) == f"{code.name}: it failed"


def test_the_field_a_message_names_is_kept() -> None:
    for message, field in [
        ("spec.memory_mib: must be between 16 and 16777216", "spec.memory_mib"),
        ("spec.nics[1].mac_address: is not a MAC address", "spec.nics[1].mac_address"),
        ("update_mask.paths[0]: 'x' cannot be updated", "update_mask.paths[0]"),
        ("VM 'web' is UP: stop it first", None),
        ("host 'h1' refused: INVALID_ARGUMENT: x", None),
    ]:
        exc = errors.from_rpc_error(_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, message))
        assert exc.field == field, message


def test_not_found_names_the_resource() -> None:
    exc = errors.from_rpc_error(_rpc_error(grpc.StatusCode.NOT_FOUND, "VM 'web 1' not found"))
    assert isinstance(exc, errors.NotFound) and (exc.kind, exc.name) == ("VM", "web 1")


async def test_the_controllers_errors_arrive_with_their_code_and_field(
    client: AsyncClient, vm_spec: VmSpec, name: str
) -> None:
    with pytest.raises(errors.InvalidArgument) as bad:
        await client.vms.create(name, dataclasses.replace(vm_spec, memory_mib=1))
    assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.field == "spec.memory_mib"
    with pytest.raises(errors.InvalidArgument) as bad:
        await client.vms.list(states=[VmState.UNSPECIFIED])
    assert bad.value.field == "states[0]"

    with pytest.raises(errors.NotFound) as missing:
        await client.vms.get("nope")
    assert (missing.value.code, missing.value.kind, missing.value.name) == (
        grpc.StatusCode.NOT_FOUND,
        "VM",
        "nope",
    )
    with pytest.raises(errors.NotFound) as missing:
        await client.hosts.get("nowhere")
    assert (missing.value.kind, missing.value.name) == ("host", "nowhere")

    vm = await client.vms.create(name, vm_spec)
    with pytest.raises(errors.AlreadyExists) as taken:
        await client.vms.create(name, vm_spec)
    assert taken.value.code is grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(errors.FailedPrecondition) as state:
        await client.vms.pause(name)
    assert "DOWN" in state.value.message and state.value.field is None
    with pytest.raises(errors.Aborted):  # a stale version
        await client.vms.update(name, VmUpdate(vcpus=2), expected_spec_version=vm.spec_version + 1)
    with pytest.raises(errors.ResourceExhausted):  # no host at all
        await client.vms.start(name)


async def test_an_unreachable_controller_is_unavailable(free_address: str) -> None:
    async with AsyncClient(free_address) as client:
        with pytest.raises(errors.Unavailable) as err:
            await client.hosts.list()
    assert err.value.code is grpc.StatusCode.UNAVAILABLE
