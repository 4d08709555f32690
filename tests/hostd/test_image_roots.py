"""Image roots: kernel, initrd and disk paths are accepted only for regular
files under hostd's own roots, and every refusal reads the same, so that the
answer never tells whether a file exists. Checked in hostd.validation, then
through a real hostd's gRPC API (libvirt's test driver: nothing boots)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd import convert
from hostd.config import HostdConfig
from hostd.main import parse_args
from hostd.validation import NOT_AN_IMAGE, Admission, validate_config
from tests.support.hostd_rig import NO_CHANNEL, vm_config
from tests.support.served import Served, serve
from virtplane_common.errors import InvalidArgument

KERNEL = "config.spec.boot.kernel_path"
INITRD = "config.spec.boot.initrd_path"
DISK = "config.spec.disks[0].path"


@dataclass(frozen=True)
class Files:
    """An image root with a kernel, an initrd and a disk, and files around it."""

    root: Path
    kernel: str
    initrd: str
    disk: str
    outside: str
    """A regular file outside the root."""
    escaping: str
    """A symlink inside the root to the file outside it."""
    dotdot: str
    """root/sub/../vmlinux: resolves to the kernel, inside the root."""
    missing: str
    """Under the root, no file."""
    folder: str
    """A folder under the root."""


@pytest.fixture
def files(tmp_path: Path) -> Files:
    root, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    (root / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for name in ("vmlinux", "initramfs.img", "data.img"):
        (root / name).write_bytes(b"stand-in")
    secret = elsewhere / "secret.img"
    secret.write_bytes(b"not an image of this host's VMs")
    (root / "escape.img").symlink_to(secret)
    return Files(
        root=root,
        kernel=str(root / "vmlinux"),
        initrd=str(root / "initramfs.img"),
        disk=str(root / "data.img"),
        outside=str(secret),
        escaping=str(root / "escape.img"),
        dotdot=f"{root}/sub/../vmlinux",
        missing=str(root / "absent.img"),
        folder=str(root / "sub"),
    )


def _config(files: Files, **paths: str) -> pb.VmConfig:
    """A VM of files' kernel, initrd and disk; paths replace kernel, initrd or disk."""
    chosen = {"kernel": files.kernel, "initrd": files.initrd, "disk": files.disk} | paths
    config = vm_config(chosen["kernel"], initrd=chosen["initrd"])
    config.spec.disks.append(vm_pb2.Disk(name="data", path=chosen["disk"]))
    return config


BAD: dict[str, Callable[[Files], str]] = {
    "outside the roots": lambda f: f.outside,
    "a symlink escaping the roots": lambda f: f.escaping,
    "a '..' resolving inside": lambda f: f.dotdot,
    "missing": lambda f: f.missing,
    "a folder": lambda f: f.folder,
}
FIELDS = {"kernel": KERNEL, "initrd": INITRD, "disk": DISK}


def _check(files: Files, config: pb.VmConfig) -> None:
    validate_config(convert.config_from_proto(config), Admission((files.root,)))


@pytest.mark.parametrize("part", sorted(FIELDS))
@pytest.mark.parametrize("case", sorted(BAD))
def test_every_bad_path_gets_the_same_message(files: Files, case: str, part: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _check(files, _config(files, **{part: BAD[case](files)}))
    assert str(caught.value) == f"{FIELDS[part]}: {NOT_AN_IMAGE}"


def test_files_under_a_root_are_accepted(files: Files) -> None:
    _check(files, _config(files))
    inside = files.root / "sub" / "link.img"
    inside.symlink_to(files.disk)  # a symlink that stays in the root
    _check(files, _config(files, disk=str(inside)))


def test_the_roots_are_resolved(files: Files, tmp_path: Path) -> None:
    """A root given through a symlink holds the files of its target, by either path."""
    linked = tmp_path / "linked-root"
    linked.symlink_to(files.root)
    admission = Admission((linked,))
    assert admission.image_roots == (files.root.resolve(),)
    via_link = _config(files, kernel=str(linked / "vmlinux"))
    validate_config(convert.config_from_proto(via_link), admission)
    validate_config(convert.config_from_proto(_config(files)), admission)


def test_a_file_under_another_root_is_refused(files: Files, tmp_path: Path) -> None:
    other = tmp_path / "other-root"
    other.mkdir()
    with pytest.raises(InvalidArgument, match=f"^{KERNEL}: {NOT_AN_IMAGE}$"):
        validate_config(convert.config_from_proto(_config(files)), Admission((other,)))
    validate_config(convert.config_from_proto(_config(files)), Admission((other, files.root)))


def test_the_other_path_checks_still_come_first(files: Files) -> None:
    with pytest.raises(InvalidArgument, match=f"^{KERNEL}: must be an absolute path"):
        _check(files, _config(files, kernel="images/vmlinux"))
    with pytest.raises(InvalidArgument, match=r"^config\.spec\.disks\[1\]\.path: .* is already"):
        config = _config(files)
        config.spec.disks.append(vm_pb2.Disk(name="again", path=files.disk))
        _check(files, config)


def test_the_image_root_flag() -> None:
    config, _ = parse_args([])
    assert config.image_roots == HostdConfig.image_roots == (Path("/var/lib/virtplane/images"),)
    config, _ = parse_args(["--image-root", "images", "--image-root", "/srv/vm-images"])
    assert config.image_roots == (Path(os.getcwd()) / "images", Path("/srv/vm-images"))


# -- through a real hostd's gRPC API


@pytest.fixture
async def rooted(short_tmp: Path, files: Files) -> AsyncIterator[Served]:
    """A hostd on the test driver whose one image root is files.root."""
    async with serve(short_tmp / "state", NO_CHANNEL, image_roots=(files.root,)) as s:
        yield s


async def _refusal(served: Served, config: pb.VmConfig) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    return caught.value.code(), caught.value.details() or ""


async def test_hostd_refuses_every_bad_path_alike(rooted: Served, files: Files) -> None:
    for part, field in FIELDS.items():
        answers = {
            case: await _refusal(rooted, _config(files, **{part: bad(files)}))
            for case, bad in BAD.items()
        }
        assert set(answers.values()) == {
            (grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {NOT_AN_IMAGE}")
        }, answers
    assert rooted.hostd.vms.list() == []


async def test_hostd_accepts_images_under_its_root(rooted: Served, files: Files) -> None:
    config = _config(files)
    created = await rooted.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    assert created.vm.vm_id == config.vm_id
