"""The libvirt domain XML hostd emits, as typed values, and its serialisation.

Maps objects to XML and back, nothing more: which devices a VM gets is
decided in hostd.builder. Only what hostd uses is modelled; unknown XML is
never round-tripped through here.
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Literal

METADATA_NAMESPACE = "urn:virtplane:hostd:1"
"""Namespace of hostd's <metadata> element: it marks the domains hostd owns."""
METADATA_PREFIX = "vp"

DomainType = Literal["kvm", "qemu"]
DiskFormat = Literal["raw", "qcow2"]
LifecycleAction = Literal["destroy", "restart", "preserve", "rename-restart"]


@dataclass(frozen=True)
class DirectKernelBoot:
    kernel: str
    initrd: str | None = None
    cmdline: str = ""


@dataclass(frozen=True)
class OsConfig:
    boot: DirectKernelBoot
    arch: str = "x86_64"
    machine: str = "pc"


@dataclass(frozen=True)
class Features:
    acpi: bool = True
    tcg_tb_cache_mib: int | None = None
    """Size of TCG's translation cache; only for domain type qemu."""


@dataclass(frozen=True)
class FileDisk:
    """A disk backed by an image file on the host, on the virtio bus."""

    path: str
    target_dev: str
    """The guest's device name: vda, vdb..."""
    format: DiskFormat = "raw"
    read_only: bool = False


@dataclass(frozen=True)
class UnixChannel:
    """A virtio-serial port bound to a unix socket that libvirt listens on."""

    socket_path: str
    target_name: str


@dataclass(frozen=True)
class FileSerial:
    """A serial port whose output goes to a file."""

    path: str
    port: int = 0


@dataclass(frozen=True)
class UserInterface:
    """User-mode (slirp) networking."""

    model: str = "virtio"
    mac: str | None = None


@dataclass(frozen=True)
class NetworkInterface:
    """A NIC on a libvirt network."""

    network: str
    model: str = "virtio"
    mac: str | None = None


Interface = UserInterface | NetworkInterface


@dataclass(frozen=True)
class VncGraphics:
    """A VNC display; libvirt picks the port."""

    listen: str = "127.0.0.1"


@dataclass(frozen=True)
class Devices:
    disks: tuple[FileDisk, ...] = ()
    channels: tuple[UnixChannel, ...] = ()
    serials: tuple[FileSerial, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    graphics: tuple[VncGraphics, ...] = ()
    video_model: str | None = None
    """<video><model type=...>; None lets libvirt decide."""
    usb_controller_model: str | None = None
    """<controller type='usb' model=...>; "none" removes the default USB controller."""
    memballoon_model: str | None = None


@dataclass(frozen=True)
class HostdMetadata:
    """What hostd stores in a domain to recognise and recover it."""

    vm_id: str
    config: bytes = b""
    """The serialised VmConfig the domain was built from."""
    state_dir: str = ""
    """The state directory of the hostd that created the domain: which hostd owns it
    when several share one libvirt (test set-ups, simulated hosts)."""
    request_id: str = ""
    """The idempotency key of the create that made the domain."""


@dataclass(frozen=True)
class Domain:
    type: DomainType
    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    os: OsConfig
    features: Features = field(default_factory=Features)
    devices: Devices = field(default_factory=Devices)
    metadata: HostdMetadata | None = None
    on_poweroff: LifecycleAction = "destroy"
    on_reboot: LifecycleAction = "restart"
    on_crash: LifecycleAction = "destroy"


def to_xml(domain: Domain) -> str:
    """Serialises a domain to libvirt XML, indented, ending with a newline."""
    root = ET.Element("domain", type=domain.type)
    _text(root, "name", domain.name)
    _text(root, "uuid", domain.uuid)
    if domain.metadata is not None:
        _metadata(ET.SubElement(root, "metadata"), domain.metadata)
    _text(root, "memory", str(domain.memory_mib), unit="MiB")
    _text(root, "vcpu", str(domain.vcpus))
    _os(ET.SubElement(root, "os"), domain.os)
    _features(ET.SubElement(root, "features"), domain.features)
    _text(root, "on_poweroff", domain.on_poweroff)
    _text(root, "on_reboot", domain.on_reboot)
    _text(root, "on_crash", domain.on_crash)
    _devices(ET.SubElement(root, "devices"), domain.devices)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def metadata_element(metadata: HostdMetadata) -> str:
    """hostd's metadata element alone, as libvirt's setMetadata takes it."""
    holder = ET.Element("metadata")
    _metadata(holder, metadata)
    return ET.tostring(holder[0], encoding="unicode")


def parse_metadata(text: str) -> HostdMetadata | None:
    """Reads hostd's metadata element, as libvirt returns it; None if it is not one.

    libvirt hands the element back without its namespace prefix, so names are
    matched on their local part.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    return _read_metadata(root)


def metadata_in_domain(text: str) -> HostdMetadata | None:
    """hostd's metadata in a whole domain's XML (e.g. a saved image's); None if absent."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    for element in root.iterfind("metadata/*"):
        if element.tag == f"{{{METADATA_NAMESPACE}}}vm":
            return _read_metadata(element)
    return None


def _read_metadata(root: ET.Element) -> HostdMetadata | None:
    if _local(root.tag) != "vm":
        return None
    fields = {_local(child.tag): (child.text or "").strip() for child in root}
    vm_id = fields.get("id", "")
    if not vm_id:
        return None
    try:
        config = base64.b64decode(fields.get("config", ""), validate=True)
    except (binascii.Error, ValueError):
        config = b""
    return HostdMetadata(
        vm_id=vm_id,
        config=config,
        state_dir=fields.get("state-dir", ""),
        request_id=fields.get("request-id", ""),
    )


def _local(tag: str) -> str:
    return tag.rpartition("}")[2].rpartition(":")[2]


def _text(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    element.text = text
    return element


def _metadata(parent: ET.Element, metadata: HostdMetadata) -> None:
    # Written with an explicit prefix and xmlns attribute rather than
    # ElementTree's namespace registry, which is process-wide state.
    p = METADATA_PREFIX
    vm = ET.SubElement(parent, f"{p}:vm", {f"xmlns:{p}": METADATA_NAMESPACE})
    _text(vm, f"{p}:id", metadata.vm_id)
    _text(vm, f"{p}:state-dir", metadata.state_dir)
    if metadata.request_id:
        _text(vm, f"{p}:request-id", metadata.request_id)
    _text(vm, f"{p}:config", base64.b64encode(metadata.config).decode("ascii"))


def _os(parent: ET.Element, os: OsConfig) -> None:
    _text(parent, "type", "hvm", arch=os.arch, machine=os.machine)
    _text(parent, "kernel", os.boot.kernel)
    if os.boot.initrd is not None:
        _text(parent, "initrd", os.boot.initrd)
    if os.boot.cmdline:
        _text(parent, "cmdline", os.boot.cmdline)


def _features(parent: ET.Element, features: Features) -> None:
    if features.acpi:
        ET.SubElement(parent, "acpi")
    if features.tcg_tb_cache_mib is not None:
        tcg = ET.SubElement(parent, "tcg")
        _text(tcg, "tb-cache", str(features.tcg_tb_cache_mib), unit="MiB")


def _devices(parent: ET.Element, devices: Devices) -> None:
    for disk in devices.disks:
        _disk(parent, disk)
    for channel in devices.channels:
        element = ET.SubElement(parent, "channel", type="unix")
        ET.SubElement(element, "source", mode="bind", path=channel.socket_path)
        ET.SubElement(element, "target", type="virtio", name=channel.target_name)
    for serial in devices.serials:
        element = ET.SubElement(parent, "serial", type="file")
        ET.SubElement(element, "source", path=serial.path)
        ET.SubElement(element, "target", port=str(serial.port))
    for nic in devices.interfaces:
        _interface(parent, nic)
    for graphics in devices.graphics:
        element = ET.SubElement(parent, "graphics", type="vnc", autoport="yes")
        ET.SubElement(element, "listen", type="address", address=graphics.listen)
    if devices.video_model is not None:
        ET.SubElement(ET.SubElement(parent, "video"), "model", type=devices.video_model)
    if devices.usb_controller_model is not None:
        ET.SubElement(parent, "controller", type="usb", model=devices.usb_controller_model)
    if devices.memballoon_model is not None:
        ET.SubElement(parent, "memballoon", model=devices.memballoon_model)


def _disk(parent: ET.Element, disk: FileDisk) -> None:
    element = ET.SubElement(parent, "disk", type="file", device="disk")
    ET.SubElement(element, "driver", name="qemu", type=disk.format)
    ET.SubElement(element, "source", file=disk.path)
    ET.SubElement(element, "target", dev=disk.target_dev, bus="virtio")
    if disk.read_only:
        ET.SubElement(element, "readonly")


def _interface(parent: ET.Element, nic: Interface) -> None:
    if isinstance(nic, NetworkInterface):
        element = ET.SubElement(parent, "interface", type="network")
        ET.SubElement(element, "source", network=nic.network)
    else:
        element = ET.SubElement(parent, "interface", type="user")
    if nic.mac is not None:
        ET.SubElement(element, "mac", address=nic.mac)
    ET.SubElement(element, "model", type=nic.model)
