from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd import convert
from hostd.validation import Admission, validate_config
from tests.support.hostd_rig import vm_config
from tests.support.real import IMAGE_ROOTS
from virtplane_common.errors import InvalidArgument
from virtplane_common.limits import AGENT_VERSION_COLUMN, MAX_DISKS
from virtplane_common.validation import clean_agent_version


def check(config: pb.VmConfig) -> None:
    """Validates config as hostd receives it: converted at the edge, then checked."""
    validate_config(convert.config_from_proto(config), Admission(IMAGE_ROOTS))


Mutation = Callable[[pb.VmConfig], None]


def _set_spec(**fields: object) -> Mutation:
    def mutate(config: pb.VmConfig) -> None:
        for name, value in fields.items():
            setattr(config.spec, name, value)

    return mutate


def _set_boot(**fields: str) -> Mutation:
    def mutate(config: pb.VmConfig) -> None:
        for name, value in fields.items():
            setattr(config.spec.boot, name, value)

    return mutate


def _add_nic(nic: vm_pb2.Nic) -> Mutation:
    def mutate(config: pb.VmConfig) -> None:
        config.spec.nics.append(vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER))
        config.spec.nics.append(nic)

    return mutate


def _add_disk(**fields: object) -> Mutation:
    """Adds a good disk (the initrd as its image), then one with fields changed."""

    def mutate(config: pb.VmConfig) -> None:
        image = config.spec.boot.initrd_path
        config.spec.disks.append(vm_pb2.Disk(name="root", path=image))
        disk = vm_pb2.Disk(name="data", path=config.spec.boot.kernel_path)
        for name, value in fields.items():
            setattr(disk, name, value)
        config.spec.disks.append(disk)

    return mutate


def _same_image(config: pb.VmConfig) -> None:
    image = config.spec.boot.initrd_path
    config.spec.disks.extend([vm_pb2.Disk(name="a", path=image), vm_pb2.Disk(name="b", path=image)])


def _many_disks(config: pb.VmConfig) -> None:
    image = config.spec.boot.initrd_path
    config.spec.disks.extend(vm_pb2.Disk(name=f"d{i}", path=image) for i in range(MAX_DISKS + 1))


def _two_nics_of_one_mac(config: pb.VmConfig) -> None:
    config.spec.nics.extend(
        vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER, name=f"n{i}", mac_address=mac)
        for i, mac in enumerate(("52:54:00:00:00:01", "52:54:00:00:00:01".upper()))
    )


CASES: dict[str, tuple[Mutation, str]] = {
    "no id": (lambda c: setattr(c, "vm_id", ""), "config.vm_id"),
    "id not a uuid": (lambda c: setattr(c, "vm_id", "vm-1"), "config.vm_id"),
    "id in capitals": (lambda c: setattr(c, "vm_id", c.vm_id.upper()), "config.vm_id"),
    "no name": (lambda c: setattr(c, "name", ""), "config.name"),
    "name with a slash": (lambda c: setattr(c, "name", "a/b"), "config.name"),
    "name too long": (lambda c: setattr(c, "name", "a" * 64), "config.name"),
    "no spec": (lambda c: c.ClearField("spec"), "config.spec.memory_mib"),
    "too many vcpus": (_set_spec(vcpus=513), "config.spec.vcpus"),
    "no memory": (_set_spec(memory_mib=0), "config.spec.memory_mib"),
    "too little memory": (_set_spec(memory_mib=15), "config.spec.memory_mib"),
    "no kernel": (_set_boot(kernel_path=""), "config.spec.boot.kernel_path"),
    "relative kernel": (_set_boot(kernel_path="vmlinux"), "config.spec.boot.kernel_path"),
    "missing kernel": (
        _set_boot(kernel_path="/nonexistent/vmlinux"),
        "config.spec.boot.kernel_path",
    ),
    "missing initrd": (
        _set_boot(initrd_path="/nonexistent/initrd"),
        "config.spec.boot.initrd_path",
    ),
    "control chars in cmdline": (_set_boot(cmdline="quiet\n"), "config.spec.boot.cmdline"),
    "nic without kind": (_add_nic(vm_pb2.Nic()), "config.spec.nics[1].kind"),
    "network nic without network": (
        _add_nic(vm_pb2.Nic(kind=vm_pb2.Nic.KIND_NETWORK)),
        "config.spec.nics[1].network",
    ),
    "bad mac": (
        _add_nic(vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER, mac_address="52:54:00")),
        "config.spec.nics[1].mac_address",
    ),
    "multicast mac": (
        _add_nic(vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER, mac_address="01:00:5e:00:00:01")),
        "config.spec.nics[1].mac_address",
    ),
    "nic name with a space": (
        _add_nic(vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER, name="nic 1")),
        "config.spec.nics[1].name",
    ),
    "disk without a name": (_add_disk(name=""), "config.spec.disks[1].name"),
    "disk name with a slash": (_add_disk(name="a/b"), "config.spec.disks[1].name"),
    "two disks of one name": (_add_disk(name="root"), "config.spec.disks[1].name"),
    "disk without a path": (_add_disk(path=""), "config.spec.disks[1].path"),
    "relative disk path": (_add_disk(path="images/data.img"), "config.spec.disks[1].path"),
    "missing disk image": (_add_disk(path="/nonexistent/data.img"), "config.spec.disks[1].path"),
    "disk image is a folder": (_add_disk(path="/tmp"), "config.spec.disks[1].path"),
    "one image as two disks": (_same_image, "config.spec.disks[1].path"),
    "unknown disk format": (_add_disk(format=7), "config.spec.disks[1].format"),
    "too many disks": (_many_disks, "config.spec.disks"),
    "unknown persistence": (lambda c: setattr(c, "persistence", 7), "config.persistence"),
    "unknown console": (lambda c: setattr(c.console, "kind", 9), "config.console.kind"),
    "name with a trailing newline": (lambda c: setattr(c, "name", "web\n"), "config.name"),
    "NUL in the cmdline": (_set_boot(cmdline="quiet\x00"), "config.spec.boot.cmdline"),
    "NUL in the kernel path": (
        _set_boot(kernel_path="/boot/vmlinux\x00"),
        "config.spec.boot.kernel_path",
    ),
    "network name too long": (
        _add_nic(vm_pb2.Nic(kind=vm_pb2.Nic.KIND_NETWORK, network="n" * 65)),
        "config.spec.nics[1].network",
    ),
    "mac with a trailing newline": (
        _add_nic(vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER, mac_address="52:54:00:00:00:01\n")),
        "config.spec.nics[1].mac_address",
    ),
    "two nics of one mac": (_two_nics_of_one_mac, "config.spec.nics[1].mac_address"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_error_names_its_field(case: str, boot_files: tuple[str, str]) -> None:
    mutate, field = CASES[case]
    config = vm_config(boot_files[0], initrd=boot_files[1])
    mutate(config)
    with pytest.raises(InvalidArgument) as caught:
        check(config)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_optional_fields_may_be_unset(boot_files: tuple[str, str]) -> None:
    config = vm_config(boot_files[0], vcpus=0)
    config.spec.nics.append(vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER))
    check(config)  # vcpus, NIC name and MAC, persistence, console: defaults


def test_a_good_config_passes(boot_files: tuple[str, str]) -> None:
    config = vm_config(
        boot_files[0],
        initrd=boot_files[1],
        nics=(
            vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER),
            vm_pb2.Nic(
                kind=vm_pb2.Nic.KIND_NETWORK, network="default", mac_address="52:54:00:AB:CD:EF"
            ),
        ),
    )
    check(config)


def test_kernel_must_be_a_file(tmp_path: Path, boot_files: tuple[str, str]) -> None:
    config = vm_config(str(tmp_path))
    with pytest.raises(InvalidArgument, match=r"config\.spec\.boot\.kernel_path"):
        check(config)


def test_disks_pass(boot_files: tuple[str, str]) -> None:
    kernel, initrd = boot_files
    config = vm_config(kernel, initrd=initrd)
    config.spec.disks.extend(
        [
            vm_pb2.Disk(name="root", path=initrd, format=vm_pb2.Disk.FORMAT_QCOW2),
            vm_pb2.Disk(name="seed", path=kernel, read_only=True),  # format: the default
        ]
    )
    check(config)


def test_one_image_under_two_paths_is_one_disk(tmp_path: Path, boot_files: tuple[str, str]) -> None:
    kernel, initrd = boot_files
    (tmp_path / "link.img").symlink_to(initrd)
    config = vm_config(kernel, initrd=initrd)
    config.spec.disks.extend(
        [
            vm_pb2.Disk(name="a", path=initrd),
            vm_pb2.Disk(name="b", path=str(tmp_path / "link.img")),
        ]
    )
    with pytest.raises(InvalidArgument) as caught:
        check(config)
    assert str(caught.value) == (
        f"config.spec.disks[1].path: {tmp_path / 'link.img'} is already disks[0]"
    )


# What a guest sends as its agent version, at its worst: longer than any
# column, with every kind of character a printable check might disagree on.
HOSTILE_AGENT_VERSIONS = [
    "1" * 100_000,
    "1.0\n",
    "\x00\x01\x1b[31m1.0\x7f",
    " \u00a0\u2028\u2029\u200b\ufeff1.0\u00a0 ",
    "\U0001f600" * 300,
]


@pytest.mark.parametrize("sent", HOSTILE_AGENT_VERSIONS)
def test_an_agent_version_from_the_guest_never_fails_a_start(
    sent: str, boot_files: tuple[str, str]
) -> None:
    """Whatever the guest sent comes back in VmConfig, as the controller stored
    it after hostd cleaned it or raw: either way the config passes."""
    for echoed in (clean_agent_version(sent), sent):
        config = vm_config(boot_files[0], initrd=boot_files[1])
        config.guest_agent_version = echoed
        check(config)
        kept = convert.config_from_proto(config).guest_agent_version
        assert kept == clean_agent_version(sent)
        assert len(kept) <= AGENT_VERSION_COLUMN and kept.isprintable()
