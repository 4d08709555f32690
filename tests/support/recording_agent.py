"""A source host that records the MigrateVm calls it takes, served over
gRPC (the transport is the seam), and a HostClient to it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from virtplane.v1 import host_agent_service_pb2 as agent
from virtplane.v1 import host_agent_service_pb2_grpc as agent_grpc

from controller.host_client import HostClient


class RecordingAgent(agent_grpc.HostAgentServiceServicer):
    """A source host that takes every MigrateVm and keeps its request."""

    def __init__(self) -> None:
        self.requests: list[agent.HostAgentServiceMigrateVmRequest] = []

    async def MigrateVm(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        vm = agent.HostVm(vm_id=request.vm_id, state=agent.HostVm.STATE_MIGRATING_FROM)
        return agent.HostAgentServiceMigrateVmResponse(vm=vm)


@pytest.fixture
async def source() -> AsyncIterator[tuple[RecordingAgent, HostClient]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    recording = RecordingAgent()  # type: ignore[abstract]
    server = grpc.aio.server()
    agent_grpc.add_HostAgentServiceServicer_to_server(recording, server)
    server.add_insecure_port(address)
    await server.start()
    client = HostClient("h1", address, 10.0)
    try:
        yield recording, client
    finally:
        await client.close()
        await server.stop(0)
