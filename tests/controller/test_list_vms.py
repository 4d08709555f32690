"""ListVms: filters by state, host and name, and paging, through the
controller's gRPC API on each database engine."""

from __future__ import annotations

# Raw stubs: this module checks ListVms' pages and tokens as sent.
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy.orm import Session
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from controller.app import Controller
from db import repositories as repo
from db.enums import HostState, VmState
from db.models import Host
from tests.support.controller_rig import admin_channel, config

S = vm_pb2.Vm
NAMES = [f"web-{i:02d}" for i in range(7)] + ["db-1", "db-2"]


@pytest.fixture
async def vms(database_url: str, tmp_path: Path) -> AsyncIterator[vm_grpc.VmServiceAsyncStub]:
    """A controller with NAMES defined; web-00..02 are UP on host h1, the rest DOWN."""
    ctl = Controller(config(database_url))
    await ctl.start()
    async with admin_channel(ctl) as channel:
        stub = vm_grpc.VmServiceStub(channel)
        spec = vm_pb2.VmSpec(
            vcpus=1, memory_mib=64, boot=vm_pb2.BootSource(kernel_path=str(tmp_path / "k"))
        )
        for name in NAMES:
            await stub.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec))

        def place(session: Session) -> None:
            # As if started there; no hostd is involved in listing.
            session.add(Host(id="h1-id", name="h1", address="127.0.0.1:1", state=HostState.UP))
            session.flush()
            for name in NAMES[:3]:
                vm = repo.find_vm(session, name)
                assert vm is not None
                vm.state, vm.host_id = VmState.UP, "h1-id"

        await ctl.db.run(place)
        yield stub
    await ctl.stop(grace=0)


async def _names(stub: vm_grpc.VmServiceAsyncStub, **filters: Any) -> list[str]:
    return [v.name for v in (await stub.ListVms(vm_api.ListVmsRequest(**filters))).vms]


async def test_filters_combine(vms: vm_grpc.VmServiceAsyncStub) -> None:
    assert await _names(vms) == sorted(NAMES)
    assert await _names(vms, states=[S.STATE_UP]) == NAMES[:3]
    assert await _names(vms, states=[S.STATE_DOWN, S.STATE_UP]) == sorted(NAMES)
    assert await _names(vms, host="h1") == NAMES[:3]
    assert await _names(vms, host="h1-id", name_contains="01") == ["web-01"]
    assert await _names(vms, name_contains="db-") == ["db-1", "db-2"]
    assert await _names(vms, name_contains="%") == []  # a literal %, not a wildcard
    assert await _names(vms, states=[S.STATE_DOWN], name_contains="web") == NAMES[3:7]


async def test_pages_follow_each_other_until_the_last(vms: vm_grpc.VmServiceAsyncStub) -> None:
    request = vm_api.ListVmsRequest(name_contains="web", page_size=3)
    pages: list[list[str]] = []
    while True:
        reply = await vms.ListVms(request)
        pages.append([v.name for v in reply.vms])
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    assert pages == [NAMES[0:3], NAMES[3:6], NAMES[6:7]]


async def test_bad_requests_name_the_field(vms: vm_grpc.VmServiceAsyncStub) -> None:
    first = await vms.ListVms(vm_api.ListVmsRequest(page_size=2))
    cases = [
        (vm_api.ListVmsRequest(page_size=-1), "page_size"),
        (vm_api.ListVmsRequest(page_token="not a token"), "page_token"),
        (vm_api.ListVmsRequest(page_token=first.next_page_token, host="h1"), "page_token"),
        (vm_api.ListVmsRequest(states=[S.STATE_UNSPECIFIED]), "states[0]"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await vms.ListVms(request)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await vms.ListVms(vm_api.ListVmsRequest(host="nowhere"))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
