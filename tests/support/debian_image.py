"""The Debian guest image built by `make debian-image` (tools/debian-image/):
where it is, what its image.json says, and a VM spec that boots a copy of it.

Each VM gets its own copy of the disk (a sparse file), so that a guest's
writes never reach the cached image; the copy, kernel and initrd go to a
folder under the temporary folder, which every test hostd has as an image
root (tests.support.real.IMAGE_ROOTS).
"""

from __future__ import annotations

import dataclasses
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
    test_package: str
    """A package the image holds for the tests to install (not installed)."""
    test_package_deb: str
    """Its .deb, a path inside the guest."""
    agent_deb: str
    """The agent's own .deb (installed at build time), a path inside the guest."""


def load_debian_image(directory: Path = DEBIAN_IMAGE_DIR) -> DebianImage:
    data = json.loads((directory / "image.json").read_text())
    return DebianImage(
        disk=directory / data["disk"],
        kernel=directory / data["kernel"],
        initrd=directory / data["initrd"],
        cmdline=data["cmdline"],
        applications=int(data["applications"]),
        user=data["user"],
        test_package=data["test_package"],
        test_package_deb=data["test_package_deb"],
        agent_deb=data["agent_deb"],
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
    return dataclasses.replace(
        image, disk=into / "disk.img", kernel=into / "vmlinuz", initrd=into / "initrd.img"
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


def read_journal(disk: Path, into: Path, *args: str) -> str:
    """The persistent journal on a powered-off guest's disk (the image keeps
    it in /var/log/journal): copied out by debugfs, no mount needed, and read
    by the host's journalctl with args (for example -b 0 for the last boot)."""
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["debugfs", "-R", f"rdump /var/log/journal {into}", str(disk)],
        check=True,
        capture_output=True,
    )
    read = subprocess.run(
        ["journalctl", f"--directory={into / 'journal'}", "--no-pager", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return read.stdout
