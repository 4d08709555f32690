"""The whole stack as real processes: a controller, a hostd on qemu:///system,
and real guests booted from the test image."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from tests.conftest import GuestImage, disk_image
from tests.stack import Stack, start_controller, start_hostd

WAIT = 120.0  # generous: guests boot in ~5 s, but CI machines may be loaded


@pytest.fixture(scope="session")
def stack(system_libvirt: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    workdir.chmod(0o755)
    hostd = start_hostd(workdir, system_libvirt)
    try:
        controller = start_controller(workdir)
    except Exception:
        hostd.stop()
        raise
    stack = Stack(workdir, controller, hostd)
    yield stack
    stack.stop()


@dataclass
class Api:
    channel: grpc.aio.Channel
    vms: vm_grpc.VmServiceAsyncStub
    hosts: host_grpc.HostServiceAsyncStub
    host_id: str
    watch: Watcher = field(init=False)


class Watcher:
    """A WatchVms client that keeps every message, for tests to wait on."""

    def __init__(self, stub: vm_grpc.VmServiceAsyncStub) -> None:
        self.messages: list[vm_api.WatchVmsResponse] = []
        self._changed = asyncio.Condition()
        self._call = stub.WatchVms(vm_api.WatchVmsRequest())
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for msg in self._call:
                async with self._changed:
                    self.messages.append(msg)
                    self._changed.notify_all()

    def states(self, vm_id: str) -> list[int]:
        """The distinct successive states the watcher saw vm_id in."""
        seen: list[int] = []
        for m in self.messages:
            if m.vm.id == vm_id and (not seen or seen[-1] != m.vm.status.state):
                seen.append(m.vm.status.state)
        return seen

    async def wait_for(
        self, vm_id: str, check: Callable[[vm_pb2.Vm], bool], wait: float = WAIT
    ) -> vm_pb2.Vm:
        """The first VM message for vm_id satisfying check(vm)."""

        async def scan() -> vm_pb2.Vm:
            start = 0
            async with self._changed:
                while True:
                    for m in self.messages[start:]:
                        if m.vm.id == vm_id and check(m.vm):
                            return m.vm
                    start = len(self.messages)
                    await self._changed.wait()

        return await asyncio.wait_for(scan(), wait)

    async def close(self) -> None:
        self._call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture(scope="session")
async def api(stack: Stack) -> AsyncIterator[Api]:
    channel = grpc.aio.insecure_channel(stack.controller.address)
    hosts = host_grpc.HostServiceStub(channel)
    reply = await hosts.AddHost(host_api.AddHostRequest(name="local", address=stack.hostd.address))
    api = Api(channel, vm_grpc.VmServiceStub(channel), hosts, reply.host.id)
    api.watch = Watcher(api.vms)
    yield api
    await api.watch.close()
    await channel.close(None)


def vm_spec(image: GuestImage, memory_mib: int = 256) -> vm_pb2.VmSpec:
    return vm_pb2.VmSpec(
        vcpus=1,
        memory_mib=memory_mib,
        boot=vm_pb2.BootSource(
            kernel_path=image.kernel, initrd_path=image.initrd, cmdline=image.cmdline
        ),
        nics=[vm_pb2.Nic(name="nic0", kind=vm_pb2.Nic.KIND_USER)],
    )


def reported(vm: vm_pb2.Vm) -> bool:
    """The guest agent's report carries IP, OS, applications and uptime."""
    g = vm.status.guest
    ips = [a for i in g.interfaces for a in i.ipv4_addresses]
    return bool(ips and g.os_name and g.application_count and g.uptime_seconds > 0)


@pytest.fixture(scope="session")
def images() -> Iterator[Path]:
    """A folder for disk images that QEMU, running as another user, can reach."""
    path = Path(tempfile.mkdtemp(prefix="vp-img-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_disk(images: Path) -> str:
    """The qcow2 image of the shared VM's disk."""
    return disk_image(images / "shared-data0.qcow2", "qcow2")


@pytest.fixture(scope="session")
async def up_vm(api: Api, guest_image: GuestImage, shared_disk: str) -> AsyncIterator[vm_pb2.Vm]:
    """A VM booted once and shared by the tests that only look at it; it has
    one disk, shared_disk."""
    spec = vm_spec(guest_image)
    spec.disks.append(vm_pb2.Disk(name="data0", path=shared_disk, format=vm_pb2.Disk.FORMAT_QCOW2))
    created = await api.vms.CreateVm(
        # Named for this run: domains are named after VMs, and other runs may
        # share the machine's libvirtd.
        vm_api.CreateVmRequest(name=f"shared-{os.getpid()}", spec=spec)
    )
    await api.vms.StartVm(vm_api.StartVmRequest(vm=created.vm.id))
    vm = await api.watch.wait_for(created.vm.id, reported)
    yield vm
    with contextlib.suppress(grpc.aio.AioRpcError):
        await api.vms.StopVm(vm_api.StopVmRequest(vm=vm.id))


def workdir_db(stack: Stack) -> Path:
    return stack.workdir / "controller.db"
