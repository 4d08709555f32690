"""The Debian guest image built by `make debian-image` (tools/debian-image/):
where it is, what its image.json says, and a VM spec that boots a copy of it.

Each VM gets its own copy of the disk (a sparse file), so that a guest's
writes never reach the cached image; the copy, kernel and initrd go to a
folder under the temporary folder, which every test hostd has as an image
root (tests.support.real.IMAGE_ROOTS).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import virtplane_client as vp
from tests.support.real import REPO, skip_or_fail

DEBIAN_IMAGE_DIR = Path(os.environ.get("VIRTPLANE_DEBIAN_IMAGE", REPO / "build" / "debian"))


@dataclass(frozen=True)
class DebianImage:
    """What tools/debian-image/build.sh wrote in image.json, with absolute paths."""

    disk: Path
    kernel: Path
    initrd: Path
    cmdline: str
    applications: int
    """How many packages the build found installed in the image."""
    user: str


def load_debian_image(directory: Path = DEBIAN_IMAGE_DIR) -> DebianImage:
    data = json.loads((directory / "image.json").read_text())
    return DebianImage(
        disk=directory / data["disk"],
        kernel=directory / data["kernel"],
        initrd=directory / data["initrd"],
        cmdline=data["cmdline"],
        applications=int(data["applications"]),
        user=data["user"],
    )


def require_debian_image(directory: Path = DEBIAN_IMAGE_DIR) -> DebianImage:
    """load_debian_image, skipping (or failing, in CI) the test when there is none."""
    if not (directory / "image.json").exists():
        skip_or_fail(f"no Debian guest image at {directory}; run `make debian-image`")
    return load_debian_image(directory)


def copy_image(image: DebianImage, into: Path) -> DebianImage:
    """The image's disk, kernel and initrd copied into a folder QEMU can reach;
    the disk stays sparse."""
    into.mkdir(mode=0o755, exist_ok=True)
    subprocess.run(["cp", "--sparse=always", str(image.disk), str(into / "disk.img")], check=True)
    shutil.copyfile(image.kernel, into / "vmlinuz")
    shutil.copyfile(image.initrd, into / "initrd.img")
    for name in ("disk.img", "vmlinuz", "initrd.img"):
        (into / name).chmod(0o644)
    return DebianImage(
        disk=into / "disk.img",
        kernel=into / "vmlinuz",
        initrd=into / "initrd.img",
        cmdline=image.cmdline,
        applications=image.applications,
        user=image.user,
    )


def debian_spec(image: DebianImage, memory_mib: int = 512, extra_cmdline: str = "") -> vp.VmSpec:
    """One vCPU, direct kernel boot of the image's kernel and initrd (its
    command line, then extra_cmdline), its raw disk as the first virtio disk
    (/dev/vda, the root), one user-mode NIC."""
    boot = vp.BootSource(str(image.kernel), str(image.initrd), image.cmdline + extra_cmdline)
    disk = vp.Disk(name="root", path=str(image.disk), format=vp.DiskFormat.RAW)
    return vp.VmSpec(
        vcpus=1, memory_mib=memory_mib, boot=boot, disks=(disk,), nics=(vp.Nic("nic0"),)
    )
