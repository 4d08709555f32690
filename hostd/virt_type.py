"""Which libvirt domain type new VMs get: "kvm" on hardware virtualisation, else "qemu" (TCG)."""

from __future__ import annotations

import logging
import os
import re
from enum import StrEnum
from pathlib import Path

from hostd.config import VirtTypeSetting

log = logging.getLogger(__name__)

_VIRT_FLAGS = re.compile(r"^flags\s*:.*\b(vmx|svm)\b", re.MULTILINE)


class VirtType(StrEnum):
    KVM = "kvm"
    QEMU = "qemu"


def cpu_has_virt_extensions(cpuinfo: str) -> bool:
    """Whether a /proc/cpuinfo text lists Intel VT-x (vmx) or AMD-V (svm)."""
    return _VIRT_FLAGS.search(cpuinfo) is not None


def kvm_device_usable(path: Path) -> bool:
    """Whether the KVM device opens for reading and writing."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def detect_virt_type(
    setting: VirtTypeSetting,
    cpuinfo: Path = Path("/proc/cpuinfo"),
    kvm_device: Path = Path("/dev/kvm"),
) -> VirtType:
    """Returns the forced type, or kvm when the CPU flags and /dev/kvm both allow it.

    /dev/kvm alone is not enough: a paravirtualised KVM without vmx/svm opens
    but cannot run Linux guests.
    """
    if setting != "auto":
        return VirtType(setting)
    try:
        flags_ok = cpu_has_virt_extensions(cpuinfo.read_text(errors="replace"))
    except OSError as exc:
        log.warning("cannot read %s (%s); assuming no hardware virtualisation", cpuinfo, exc)
        flags_ok = False
    device_ok = kvm_device_usable(kvm_device)
    chosen = VirtType.KVM if flags_ok and device_ok else VirtType.QEMU
    log.info(
        "virt type %s (cpu flags vmx/svm: %s, %s usable: %s)",
        chosen,
        flags_ok,
        kvm_device,
        device_ok,
    )
    return chosen
