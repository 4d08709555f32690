"""Real guests over the whole stack: a virtplane_client on a controller (Api,
on a stack with one host, following its watch), the VM spec that
boots the test guest image (the client's model; as a proto for hostd), what a
guest that has fully reported looks like, and how long to wait for one."""

from __future__ import annotations

from dataclasses import dataclass

from virtplane.v1 import vm_pb2

import virtplane_client as vp
from tests.support.events import VmChanges
from tests.support.real import GuestImage
from tests.support.stack import Stack

WAIT = 120.0  # generous: guests boot in ~5 s, but CI machines may be loaded


@dataclass
class Api:
    """A client on the stack's controller, its host's id, and its watch followed."""

    client: vp.AsyncClient
    host_id: str
    watch: VmChanges

    @classmethod
    async def open(cls, stack: Stack) -> Api:
        """Connects to the stack's controller, whose hostd is host "local"."""
        client = stack.controller.client()
        host = await client.hosts.get("local")
        return cls(client, host.id, VmChanges.of_client(client, WAIT))

    async def close(self) -> None:
        await self.watch.close()
        await self.client.close()


def vm_spec(image: GuestImage, memory_mib: int = 256) -> vm_pb2.VmSpec:
    """guest_spec as a proto, for hostd's own API (CreateVm on a host)."""
    return vm_pb2.VmSpec(
        vcpus=1,
        memory_mib=memory_mib,
        boot=vm_pb2.BootSource(
            kernel_path=image.kernel, initrd_path=image.initrd, cmdline=image.cmdline
        ),
        nics=[vm_pb2.Nic(name="nic0", kind=vm_pb2.Nic.KIND_USER)],
    )


def guest_spec(image: GuestImage, memory_mib: int = 256) -> vp.VmSpec:
    """A VM that boots the test guest image, with one user-mode NIC (the
    client's model of vm_spec)."""
    boot = vp.BootSource(image.kernel, image.initrd, image.cmdline)
    return vp.VmSpec(vcpus=1, memory_mib=memory_mib, boot=boot, nics=(vp.Nic("nic0"),))


def guest_reported(vm: vp.Vm) -> bool:
    """The guest agent's report carries IP, OS, applications and uptime."""
    g = vm.status.guest
    return bool(
        g and g.ipv4_addresses and g.os_name and g.application_count and g.uptime_seconds > 0
    )
