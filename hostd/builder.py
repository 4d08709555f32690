"""The decisions that turn a validated VmConfig into the domain hostd asks libvirt for."""

from __future__ import annotations

from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd import domxml
from hostd.layout import StateLayout
from hostd.virt_type import VirtType

DOMAIN_NAME_PREFIX = "vp-"
GUEST_CHANNEL_NAME = "org.virtplane.guestd.0"
TCG_TB_CACHE_MIB = 32
"""Cuts a TCG guest's host memory by about a quarter against QEMU's default."""
ARCH = "x86_64"
MACHINE = "pc"
NIC_MODEL = "virtio"


def domain_name(vm_name: str) -> str:
    """libvirt's name for a VM: prefixed so hostd's domains stand out."""
    return DOMAIN_NAME_PREFIX + vm_name


def build_domain(config: pb.VmConfig, virt_type: VirtType, layout: StateLayout) -> domxml.Domain:
    """Returns the transient domain for a VmConfig that passed validation."""
    spec = config.spec
    is_tcg = virt_type is VirtType.QEMU
    return domxml.Domain(
        type="qemu" if is_tcg else "kvm",
        name=domain_name(config.name),
        uuid=config.vm_id,
        memory_mib=spec.memory_mib,
        vcpus=spec.vcpus,
        os=domxml.OsConfig(
            boot=domxml.DirectKernelBoot(
                kernel=spec.boot.kernel_path,
                initrd=spec.boot.initrd_path or None,
                cmdline=spec.boot.cmdline,
            ),
            arch=ARCH,
            machine=MACHINE,
        ),
        features=domxml.Features(acpi=True, tcg_tb_cache_mib=TCG_TB_CACHE_MIB if is_tcg else None),
        devices=domxml.Devices(
            channels=(
                domxml.UnixChannel(
                    socket_path=str(layout.channel_socket(config.vm_id)),
                    target_name=GUEST_CHANNEL_NAME,
                ),
            ),
            serials=(domxml.FileSerial(path=str(layout.console_log(config.vm_id))),),
            interfaces=tuple(_interface(nic) for nic in spec.nics),
            usb_controller_model="none",
            memballoon_model="none",
        ),
        metadata=domxml.HostdMetadata(
            vm_id=config.vm_id,
            config=config.SerializeToString(deterministic=True),
            state_dir=str(layout.root),
        ),
        on_poweroff="destroy",
        on_reboot="restart",
        on_crash="destroy",
    )


def _interface(nic: vm_pb2.Nic) -> domxml.Interface:
    mac = nic.mac_address.lower() or None
    if nic.kind == vm_pb2.Nic.KIND_NETWORK:
        return domxml.NetworkInterface(network=nic.network, model=NIC_MODEL, mac=mac)
    return domxml.UserInterface(model=NIC_MODEL, mac=mac)
