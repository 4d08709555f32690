"""Real guests over the whole stack: clients on a controller (Api, on a stack
with one host, following WatchVms; Client, waiting through GetVm), the VM
spec that boots the test guest image, what a guest that has fully reported
looks like, and how long to wait for one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
from virtplane.v1 import host_pb2, vm_pb2
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from tests.support.events import VmEvents
from tests.support.real import GuestImage
from tests.support.stack import Stack
from tests.support.waiting import until

WAIT = 120.0  # generous: guests boot in ~5 s, but CI machines may be loaded


@dataclass
class Api:
    """Stubs on the stack's controller, its host's id, and its WatchVms followed."""

    channel: grpc.aio.Channel
    vms: vm_grpc.VmServiceAsyncStub
    hosts: host_grpc.HostServiceAsyncStub
    host_id: str
    watch: VmEvents

    @classmethod
    async def open(cls, stack: Stack) -> Api:
        """Connects to the stack's controller and adds its hostd as host "local"."""
        channel = grpc.aio.insecure_channel(stack.controller.address)
        hosts = host_grpc.HostServiceStub(channel)
        reply = await hosts.AddHost(
            host_api.AddHostRequest(name="local", address=stack.hostd.address)
        )
        vms = vm_grpc.VmServiceStub(channel)
        return cls(channel, vms, hosts, reply.host.id, VmEvents.of_stub(vms, WAIT))

    async def close(self) -> None:
        await self.watch.close()
        await self.channel.close(None)


def vm_spec(image: GuestImage, memory_mib: int = 256) -> vm_pb2.VmSpec:
    """A VM that boots the test guest image, with one user-mode NIC."""
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


class Client:
    """Stubs on a controller, with waits on a VM through GetVm."""

    def __init__(self, address: str, wait: float = WAIT) -> None:
        self.wait = wait
        self.channel = grpc.aio.insecure_channel(address)
        self.vms = vm_grpc.VmServiceStub(self.channel)
        self.hosts = host_grpc.HostServiceStub(self.channel)

    async def vm(self, ref: str) -> vm_pb2.Vm:
        return (await self.vms.GetVm(vm_api.GetVmRequest(vm=ref))).vm

    async def host(self, ref: str) -> host_pb2.Host:
        return (await self.hosts.GetHost(host_api.GetHostRequest(host=ref))).host

    async def _vm_if_any(self, ref: str) -> vm_pb2.Vm | None:
        """The VM, or None while the controller does not know it (yet)."""
        try:
            return await self.vm(ref)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.NOT_FOUND:
                raise
            return None

    async def until(
        self, ref: str, check: Callable[[vm_pb2.Vm], object], wait: float | None = None
    ) -> vm_pb2.Vm:
        """The VM, once check accepts it (within wait seconds, by default the
        client's)."""
        vm = await until(
            lambda: self._vm_if_any(ref),
            lambda vm: vm is not None and check(vm),
            what=f"VM {ref}",
            within=wait or self.wait,
            every=0.1,
        )
        assert vm is not None
        return vm

    async def close(self) -> None:
        await self.channel.close(None)
