"""The controller serves the standard gRPC health service and server
reflection, as any gRPC client sees them."""

from __future__ import annotations

# Raw stubs: this module is about gRPC health and reflection themselves.
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from controller.app import Controller
from tests.support.controller_rig import admin_channel, config

WAIT = 30.0  # only reached when something is broken
SERVICES = ("virtplane.v1.VmService", "virtplane.v1.HostService")
H = health_pb2.HealthCheckResponse


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[Controller]:
    ctl = Controller(config(f"sqlite:///{tmp_path}/c.db"))
    await ctl.start()
    yield ctl
    await ctl.stop(grace=0)


def _channel(ctl: Controller) -> grpc.aio.Channel:
    return admin_channel(ctl)


async def test_health_is_serving_for_the_server_and_each_service(controller: Controller) -> None:
    async with _channel(controller) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", *SERVICES):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT)
            assert reply.status == H.SERVING, service
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=WAIT)
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        # The library does not offer List; the error boundary says so, not INTERNAL.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.List(health_pb2.HealthListRequest(), timeout=WAIT)
        assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_lists_and_describes_the_services(controller: Controller) -> None:
    async with _channel(controller) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICES[1]),
        ]
        replies = [r async for r in stub.ServerReflectionInfo(iter(requests), timeout=WAIT)]
    listed = {s.name for s in replies[0].list_services_response.service}
    assert listed >= {
        *SERVICES,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in replies[1].file_descriptor_response.file_descriptor_proto
    ]
    host_service = next(f for f in files if f.name == "virtplane/v1/host_service.proto")
    assert "AddHost" in [m.name for m in host_service.service[0].method]


async def test_health_turns_not_serving_when_the_controller_stops(tmp_path: Path) -> None:
    ctl = Controller(config(f"sqlite:///{tmp_path}/c.db"))
    await ctl.start()
    async with _channel(ctl) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await asyncio.wait_for(watch.read(), WAIT)
        assert first.status == H.SERVING
        stopping = asyncio.create_task(ctl.stop(grace=WAIT))
        second = await asyncio.wait_for(watch.read(), WAIT)
        assert second.status == H.NOT_SERVING
        watch.cancel()
        await stopping
