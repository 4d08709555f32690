"""The decisions that turn a validated VmConfig into the domain hostd asks libvirt for.

The configuration itself goes into the domain's metadata in its stored form
(hostd.convert.config_to_bytes): recovery reads it back from there.
"""

from __future__ import annotations

from hostd import consoles, convert, domxml
from hostd.layout import StateLayout
from hostd.model import ConsoleKind, Disk, DiskFormat, Nic, NicKind, VmConfig
from hostd.virt_type import VirtType

DOMAIN_NAME_PREFIX = "vp-"
GUEST_CHANNEL_NAME = "org.virtplane.guestd.0"
TCG_TB_CACHE_MIB = 32
"""Cuts a TCG guest's host memory by about a quarter against QEMU's default."""
ARCH = "x86_64"
MACHINE = "pc"
NIC_MODEL = "virtio"
VNC_LISTEN = "127.0.0.1"
"""VNC is reached through the host (an SSH tunnel, a proxy), never directly."""
VIDEO_MODEL = "vga"
DISK_BUS_PREFIX = "vd"
"""virtio disks: the guest sees the VM's disks as /dev/vda, /dev/vdb... in their order."""
_DISK_FORMATS: dict[DiskFormat, domxml.DiskFormat] = {
    DiskFormat.RAW: "raw",
    DiskFormat.QCOW2: "qcow2",
}


def domain_name(vm_name: str) -> str:
    """libvirt's name for a VM: prefixed so hostd's domains stand out."""
    return DOMAIN_NAME_PREFIX + vm_name


def build_domain(
    config: VmConfig, virt_type: VirtType, layout: StateLayout, *, request_id: str = ""
) -> domxml.Domain:
    """Returns the domain for a VmConfig that passed validation and has its defaults.

    request_id, the create's idempotency key, is kept in the metadata so that a
    restarted hostd still recognises a repeated create.
    """
    spec = config.spec
    is_tcg = virt_type is VirtType.QEMU
    console = config.console
    if console not in consoles.BUILDABLE:
        raise ValueError(f"no domain for console {console.api_name}")
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
            disks=tuple(_disk(index, disk) for index, disk in enumerate(spec.disks)),
            channels=(
                domxml.UnixChannel(
                    socket_path=str(layout.channel_socket(config.vm_id)),
                    target_name=GUEST_CHANNEL_NAME,
                ),
            ),
            serials=()
            if console == ConsoleKind.NONE
            else (domxml.FileSerial(path=str(layout.console_log(config.vm_id))),),
            interfaces=tuple(_interface(nic) for nic in spec.nics),
            graphics=(domxml.VncGraphics(listen=VNC_LISTEN),) if console == ConsoleKind.VNC else (),
            video_model=VIDEO_MODEL if console == ConsoleKind.VNC else None,
            usb_controller_model="none",
            memballoon_model="none",
        ),
        metadata=domxml.HostdMetadata(
            vm_id=config.vm_id,
            config=convert.config_to_bytes(config),
            state_dir=str(layout.root),
            request_id=request_id,
        ),
        on_poweroff="destroy",
        on_reboot="restart",
        on_crash="destroy",
    )


def disk_target(index: int) -> str:
    """The guest's name of the VM's disk at index: vda..vdz, then vdaa, vdab..."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return DISK_BUS_PREFIX + letters


def _disk(index: int, disk: Disk) -> domxml.FileDisk:
    fmt = _DISK_FORMATS.get(disk.format)
    if fmt is None:
        raise ValueError(f"no domain for disk format {disk.format} (defaults not filled in?)")
    return domxml.FileDisk(
        path=disk.path, target_dev=disk_target(index), format=fmt, read_only=disk.read_only
    )


def _interface(nic: Nic) -> domxml.Interface:
    mac = nic.mac_address.lower() or None
    if nic.kind == NicKind.NETWORK:
        return domxml.NetworkInterface(network=nic.network, model=NIC_MODEL, mac=mac)
    return domxml.UserInterface(model=NIC_MODEL, mac=mac)
