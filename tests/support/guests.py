"""Real guests over the whole stack: stubs on a controller (Api, on a stack
with one host, following WatchVms), a VM followed through virtplane_client's
watch until it looks as a test wants (vm_until), the VM spec that boots the
test guest image (as a proto and as the client's model), what a guest that
has fully reported looks like, and how long to wait for one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

import virtplane_client as vp
from tests.support.events import VmEvents
from tests.support.real import GuestImage
from tests.support.stack import Stack

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


def guest_spec(image: GuestImage, memory_mib: int = 256) -> vp.VmSpec:
    """vm_spec as the client's model."""
    boot = vp.BootSource(image.kernel, image.initrd, image.cmdline)
    return vp.VmSpec(vcpus=1, memory_mib=memory_mib, boot=boot, nics=(vp.Nic("nic0"),))


def guest_reported(vm: vp.Vm) -> bool:
    """reported, on the client's model of the VM."""
    g = vm.status.guest
    return bool(
        g and g.ipv4_addresses and g.os_name and g.application_count and g.uptime_seconds > 0
    )


async def vm_until(
    client: vp.AsyncClient, ref: str, check: Callable[[vp.Vm], object], within: float = WAIT
) -> vp.Vm:
    """The VM (named by id or name; it may not exist yet) as the client's
    watch first shows it accepted by check, within seconds."""
    last: vp.Vm | None = None
    try:
        async with asyncio.timeout(within):
            async with contextlib.aclosing(client.vms.watch()) as changes:
                async for change in changes:
                    vm = change.vm
                    if vm is not None and ref in (vm.id, vm.name):
                        last = vm
                        if check(vm):
                            return vm
    except TimeoutError:
        pass
    raise AssertionError(f"VM {ref} not as wanted after {within} s; last seen: {last}")
