"""The controller's test rig: an in-process controller on a fresh database of
each engine, with gRPC stubs on it, used with a real hostd process on
libvirt's test driver (test:///default: domains are made and destroyed,
nothing boots, so a started VM stays POWERING_UP), with raw gRPC stubs on it
(the controller's tests are about its API on the wire: exact messages, status
codes) and a virtplane_client on the same channel for waiting on a VM's state
(`rig.client.vms.wait_for(vm, state, timeout=WAIT)`); and the VM specs and
error checks its tests share."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from virtplane.v1 import host_service_pb2_grpc as host_grpc
from virtplane.v1 import operation_service_pb2_grpc as op_grpc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

import virtplane_client as vp
from controller.app import Controller
from controller.config import ControllerConfig
from tests.support.waiting import TIMEOUT

WAIT = TIMEOUT
"""How long a test waits for a VM's state, in seconds."""


@dataclass
class Rig:
    """A controller in this process, and stubs and a client on its gRPC port."""

    controller: Controller
    channel: grpc.aio.Channel
    vms: vm_grpc.VmServiceAsyncStub
    hosts: host_grpc.HostServiceAsyncStub
    ops: op_grpc.OperationServiceAsyncStub
    address: str
    client: vp.AsyncClient


def config(database_url: str, **overrides: object) -> ControllerConfig:
    return ControllerConfig(
        listen="127.0.0.1:0",
        database_url=database_url,
        host_retry_seconds=0.1,
        **overrides,  # type: ignore[arg-type]
    )


async def open_rig(cfg: ControllerConfig) -> Rig:
    ctl = Controller(cfg)
    await ctl.start()
    address = f"127.0.0.1:{ctl.port}"
    channel = grpc.aio.insecure_channel(address)
    return Rig(
        ctl,
        channel,
        vm_grpc.VmServiceStub(channel),
        host_grpc.HostServiceStub(channel),
        op_grpc.OperationServiceStub(channel),
        address,
        vp.AsyncClient(channel=channel),  # closed with the channel
    )


async def close_rig(rig: Rig) -> None:
    await rig.channel.close(None)
    await rig.controller.stop(grace=0)


def spec(boot: vm_pb2.BootSource, memory_mib: int = 128) -> vm_pb2.VmSpec:
    return vm_pb2.VmSpec(
        vcpus=1,
        memory_mib=memory_mib,
        boot=boot,
        nics=[vm_pb2.Nic(name="nic0", kind=vm_pb2.Nic.KIND_USER)],
    )


def boot_source(tmp_path: Path) -> vm_pb2.BootSource:
    # The test driver boots nothing, but hostd checks that the files exist.
    (tmp_path / "vmlinuz").write_bytes(b"")
    return vm_pb2.BootSource(kernel_path=str(tmp_path / "vmlinuz"))


async def error(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The status code and details of the error that call ends with."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details() or ""
