"""Lookups by id or name with a NUL or a control character in it, which
PostgreSQL refused with an error the API answered INTERNAL (found by
test_api_properties): each now gets INVALID_ARGUMENT naming its field, on
each engine, and a page token carrying one likewise."""

from __future__ import annotations

# Raw stubs: this module checks status codes and details as sent.
import base64
import json
from collections.abc import Awaitable, Callable

import grpc
import pytest
from virtplane.v1 import affinity_group_service_pb2 as group_api
from virtplane.v1 import affinity_group_service_pb2_grpc as group_grpc
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import operation_service_pb2 as op_api
from virtplane.v1 import vm_service_pb2 as vm_api

from tests.support.controller_rig import Rig, error

INVALID = grpc.StatusCode.INVALID_ARGUMENT

Lookup = Callable[[Rig, str], Awaitable[object]]


async def _watch(rig: Rig, request: vm_api.WatchVmsRequest) -> object:
    stream = rig.vms.WatchVms(request)
    try:
        return await stream.read()
    finally:
        stream.cancel()


def _groups(rig: Rig) -> group_grpc.AffinityGroupServiceAsyncStub:
    return group_grpc.AffinityGroupServiceStub(rig.channel)


LOOKUPS: dict[str, tuple[Lookup, str]] = {
    "GetVm": (lambda r, v: r.vms.GetVm(vm_api.GetVmRequest(vm=v)), "vm"),
    "StartVm": (lambda r, v: r.vms.StartVm(vm_api.StartVmRequest(vm=v)), "vm"),
    "GetHost": (lambda r, v: r.hosts.GetHost(host_api.GetHostRequest(host=v)), "host"),
    "GetOperation": (lambda r, v: r.ops.GetOperation(op_api.GetOperationRequest(id=v)), "id"),
    "WaitOperation": (lambda r, v: r.ops.WaitOperation(op_api.WaitOperationRequest(id=v)), "id"),
    "ListOperations": (
        lambda r, v: r.ops.ListOperations(op_api.ListOperationsRequest(vm=v)),
        "vm",
    ),
    "ListEvents by VM": (
        lambda r, v: r.ops.ListEvents(op_api.ListEventsRequest(vm_id=v)),
        "vm_id",
    ),
    "ListEvents by host": (
        lambda r, v: r.ops.ListEvents(op_api.ListEventsRequest(host_id=v)),
        "host_id",
    ),
    "WatchVms by host": (lambda r, v: _watch(r, vm_api.WatchVmsRequest(host=v)), "host"),
    "WatchVms by VM": (
        lambda r, v: _watch(r, vm_api.WatchVmsRequest(vm_ids=["a", v])),
        "vm_ids[1]",
    ),
    "GetAffinityGroup": (
        lambda r, v: _groups(r).GetAffinityGroup(group_api.GetAffinityGroupRequest(group=v)),
        "group",
    ),
    "DeleteAffinityGroup": (
        lambda r, v: _groups(r).DeleteAffinityGroup(group_api.DeleteAffinityGroupRequest(group=v)),
        "group",
    ),
    "CreateAffinityGroup": (
        lambda r, v: _groups(r).CreateAffinityGroup(
            group_api.CreateAffinityGroupRequest(
                name="g1", polarity=group_api.AffinityGroup.POLARITY_POSITIVE, vms=[v]
            )
        ),
        "vms[0]",
    ),
}


@pytest.mark.parametrize("value", ["\x00", "web\x00", "web\n"])
@pytest.mark.parametrize("lookup", sorted(LOOKUPS))
async def test_a_lookup_with_a_control_character_is_refused(
    rig: Rig, lookup: str, value: str
) -> None:
    ask, field = LOOKUPS[lookup]
    code, details = await error(ask(rig, value))
    assert (code, details.startswith(f"{field}: ")) == (INVALID, True), details


async def test_a_list_operations_page_token_with_a_nul_is_refused(rig: Rig) -> None:
    raw = {"filters": {"vm": "", "states": []}, "created": "2026-01-01T00:00:00", "id": "a\x00"}
    token = base64.urlsafe_b64encode(json.dumps(raw).encode()).decode()
    request = op_api.ListOperationsRequest(page_token=token)
    code, details = await error(rig.ops.ListOperations(request))
    assert (code, details.startswith("page_token: ")) == (INVALID, True), details
