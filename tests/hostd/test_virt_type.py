from __future__ import annotations

from pathlib import Path

import pytest

from hostd.virt_type import VirtType, cpu_has_virt_extensions, detect_virt_type

INTEL = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse sse2\n"
AMD = "processor\t: 0\nflags\t\t: fpu svm lm\n"
NONE = "processor\t: 0\nflags\t\t: fpu vme de pse sse sse2 hypervisor\nmodel name\t: vmx-like\n"


@pytest.mark.parametrize(("text", "expected"), [(INTEL, True), (AMD, True), (NONE, False)])
def test_cpu_flags(text: str, expected: bool) -> None:
    assert cpu_has_virt_extensions(text) is expected


@pytest.fixture
def kvm_device(tmp_path: Path) -> Path:
    device = tmp_path / "kvm"
    device.write_bytes(b"")
    return device


def _cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_kvm_needs_flags_and_device(tmp_path: Path, kvm_device: Path) -> None:
    cpuinfo = _cpuinfo(tmp_path, INTEL)
    assert detect_virt_type("auto", cpuinfo, kvm_device) is VirtType.KVM


def test_device_without_flags_is_qemu(tmp_path: Path, kvm_device: Path) -> None:
    # A paravirtualised /dev/kvm (no vmx/svm) opens but cannot run Linux guests.
    assert detect_virt_type("auto", _cpuinfo(tmp_path, NONE), kvm_device) is VirtType.QEMU


def test_flags_without_device_is_qemu(tmp_path: Path) -> None:
    cpuinfo = _cpuinfo(tmp_path, AMD)
    assert detect_virt_type("auto", cpuinfo, tmp_path / "missing") is VirtType.QEMU


def test_unreadable_cpuinfo_is_qemu(tmp_path: Path, kvm_device: Path) -> None:
    assert detect_virt_type("auto", tmp_path / "missing", kvm_device) is VirtType.QEMU


@pytest.mark.parametrize("setting", ["kvm", "qemu"])
def test_the_setting_overrides_detection(tmp_path: Path, setting: str) -> None:
    missing = tmp_path / "missing"
    assert detect_virt_type(setting, missing, missing) is VirtType(setting)  # type: ignore[arg-type]


def test_this_machine_runs_tcg() -> None:
    # GUEST.md: /dev/kvm exists here but the CPU has no vmx/svm.
    cpuinfo = Path("/proc/cpuinfo")
    if cpu_has_virt_extensions(cpuinfo.read_text()):
        pytest.skip("this machine has hardware virtualisation")
    assert detect_virt_type("auto") is VirtType.QEMU
