"""The domain XML hostd emits, compared with golden files.

Regenerate after an intended change with:
    VIRTPLANE_REGEN_GOLDEN=1 .venv/bin/pytest tests/hostd/test_domxml_golden.py
and review the diff.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd import convert, domxml
from hostd.builder import build_domain, disk_target
from hostd.defaults import mac_address, with_defaults
from hostd.layout import StateLayout
from hostd.model import DiskFormat, VmConfig
from hostd.virt_type import VirtType

GOLDEN = Path(__file__).parent / "golden"
LAYOUT = StateLayout(Path("/var/lib/virtplane/hostd"))
VM_ID = "6f1c9a52-3d0e-4b7a-9a51-0c2d8e4f7b13"


def minimal() -> VmConfig:
    return _filled(_minimal())


def _filled(config: pb.VmConfig) -> VmConfig:
    """config as hostd receives it (converted at the edge), with its defaults."""
    return with_defaults(convert.config_from_proto(config))


def _minimal() -> pb.VmConfig:
    return pb.VmConfig(
        vm_id=VM_ID,
        name="minimal",
        spec=vm_pb2.VmSpec(
            vcpus=1,
            memory_mib=256,
            boot=vm_pb2.BootSource(
                kernel_path="/srv/guest/vmlinux",
                initrd_path="/srv/guest/initramfs.img",
                cmdline="console=ttyS0 panic=-1 quiet",
            ),
        ),
    )


def two_nics() -> VmConfig:
    config = _minimal()
    config.name = "two-nics"
    config.spec.vcpus = 2
    config.spec.memory_mib = 512
    config.spec.nics.extend(
        [
            vm_pb2.Nic(name="nic0", kind=vm_pb2.Nic.KIND_USER),
            vm_pb2.Nic(
                name="nic1",
                kind=vm_pb2.Nic.KIND_NETWORK,
                network="default",
                mac_address="52:54:00:AB:CD:EF",
            ),
        ]
    )
    return _filled(config)


def vnc_persistent() -> VmConfig:
    config = _minimal()
    config.name = "vnc"
    config.console.kind = pb.Console.KIND_VNC
    config.persistence = pb.VmConfig.PERSISTENCE_PERSISTENT
    return _filled(config)


def no_console() -> VmConfig:
    config = _minimal()
    config.name = "no-console"
    config.console.kind = pb.Console.KIND_NONE
    return _filled(config)


def disks() -> VmConfig:
    config = _minimal()
    config.name = "disks"
    config.spec.disks.extend(
        [
            vm_pb2.Disk(
                name="root", path="/srv/images/root.qcow2", format=vm_pb2.Disk.FORMAT_QCOW2
            ),
            vm_pb2.Disk(name="data", path="/srv/images/data.img"),  # raw by default
            vm_pb2.Disk(
                name="seed",
                path="/srv/images/seed.img",
                format=vm_pb2.Disk.FORMAT_RAW,
                read_only=True,
            ),
        ]
    )
    return _filled(config)


CASES = {
    "minimal_qemu": (minimal, VirtType.QEMU, ""),
    "two_nics_qemu": (two_nics, VirtType.QEMU, ""),
    "minimal_kvm": (minimal, VirtType.KVM, ""),
    "vnc_persistent_qemu": (vnc_persistent, VirtType.QEMU, "req-1"),
    "no_console_qemu": (no_console, VirtType.QEMU, ""),
    "disks_qemu": (disks, VirtType.QEMU, ""),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_domain_xml_matches_golden(case: str) -> None:
    make, virt_type, request_id = CASES[case]
    xml = domxml.to_xml(build_domain(make(), virt_type, LAYOUT, request_id=request_id))
    golden = GOLDEN / f"{case}.xml"
    if os.environ.get("VIRTPLANE_REGEN_GOLDEN") == "1":
        golden.write_text(xml)
    assert golden.exists(), f"no golden file {golden}; regenerate (see module docstring)"
    assert xml == golden.read_text()


def test_metadata_round_trips() -> None:
    domain = build_domain(two_nics(), VirtType.QEMU, LAYOUT, request_id="req-7")
    assert domain.metadata is not None
    parsed = domxml.parse_metadata(domxml.metadata_element(domain.metadata))
    assert parsed == domain.metadata
    assert parsed.request_id == "req-7"
    assert pb.VmConfig.FromString(parsed.config) == convert.config_to_proto(two_nics())
    assert domxml.metadata_in_domain(domxml.to_xml(domain)) == domain.metadata


def test_a_domain_without_hostds_metadata() -> None:
    assert domxml.metadata_in_domain("<domain><name>x</name></domain>") is None
    other = "<domain><metadata><x:vm xmlns:x='urn:other'><x:id>1</x:id></x:vm></metadata></domain>"
    assert domxml.metadata_in_domain(other) is None
    assert domxml.metadata_in_domain("<domain") is None


def test_a_config_without_defaults_is_not_built() -> None:
    with pytest.raises(ValueError, match="console"):
        build_domain(convert.config_from_proto(_minimal()), VirtType.QEMU, LAYOUT)


def test_metadata_as_libvirt_returns_it() -> None:
    # libvirt hands the element back without the namespace prefix.
    text = "<vm>\n  <id>abc</id>\n  <state-dir>/s</state-dir>\n  <config>AAEC</config>\n</vm>"
    expected = domxml.HostdMetadata(vm_id="abc", config=b"\0\1\2", state_dir="/s")
    assert domxml.parse_metadata(text) == expected


@pytest.mark.parametrize(
    "text", ["", "<vm/>", "<other><id>x</id></other>", "<vm><id>x</id>", "not xml"]
)
def test_foreign_metadata_is_not_ours(text: str) -> None:
    assert domxml.parse_metadata(text) is None


def test_builder_decisions() -> None:
    domain = build_domain(two_nics(), VirtType.QEMU, LAYOUT)
    assert domain.name == "vp-two-nics"
    assert domain.uuid == VM_ID
    assert domain.features.tcg_tb_cache_mib == 32
    channel = domain.devices.channels[0]
    assert channel.socket_path == f"/var/lib/virtplane/hostd/channels/{VM_ID}.sock"
    assert channel.target_name == "org.virtplane.guestd.0"
    assert domain.devices.serials[0].path == f"/var/lib/virtplane/hostd/consoles/{VM_ID}.log"
    assert domain.devices.interfaces == (
        domxml.UserInterface(mac=mac_address(VM_ID, 0)),
        domxml.NetworkInterface(network="default", mac="52:54:00:ab:cd:ef"),
    )
    assert domain.devices.graphics == ()
    vnc = build_domain(vnc_persistent(), VirtType.QEMU, LAYOUT)
    assert vnc.devices.graphics == (domxml.VncGraphics(listen="127.0.0.1"),)
    assert vnc.devices.serials, "a VNC console keeps the serial log"
    assert build_domain(no_console(), VirtType.QEMU, LAYOUT).devices.serials == ()
    kvm = build_domain(two_nics(), VirtType.KVM, LAYOUT)
    assert kvm.type == "kvm"
    assert kvm.features.tcg_tb_cache_mib is None


def test_disks_in_order_on_virtio() -> None:
    domain = build_domain(disks(), VirtType.QEMU, LAYOUT)
    assert domain.devices.disks == (
        domxml.FileDisk(path="/srv/images/root.qcow2", target_dev="vda", format="qcow2"),
        domxml.FileDisk(path="/srv/images/data.img", target_dev="vdb", format="raw"),
        domxml.FileDisk(
            path="/srv/images/seed.img", target_dev="vdc", format="raw", read_only=True
        ),
    )
    assert build_domain(minimal(), VirtType.QEMU, LAYOUT).devices.disks == ()
    assert domain.metadata is not None
    assert pb.VmConfig.FromString(domain.metadata.config) == convert.config_to_proto(disks())


@pytest.mark.parametrize(
    ("index", "dev"), [(0, "vda"), (1, "vdb"), (15, "vdp"), (25, "vdz"), (26, "vdaa"), (27, "vdab")]
)
def test_disk_target_names(index: int, dev: str) -> None:
    assert disk_target(index) == dev


def test_a_disk_without_its_default_format_is_not_built() -> None:
    config = disks()
    unset = list(config.spec.disks)
    unset[1] = replace(unset[1], format=DiskFormat.UNSPECIFIED)
    config = replace(config, spec=replace(config.spec, disks=tuple(unset)))
    with pytest.raises(ValueError, match="disk format"):
        build_domain(config, VirtType.QEMU, LAYOUT)
