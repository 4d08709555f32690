"""The benchmark's raw baseline uses the domain hostd would create (not timed)."""

from __future__ import annotations

from pathlib import Path

from hostd.layout import StateLayout
from tests.bench.start_path import raw_xml
from tests.conftest import GuestImage


def test_the_raw_baseline_boots_the_same_domain_hostd_builds(tmp_path: Path) -> None:
    image = GuestImage(kernel="/boot/k", initrd="/boot/i", cmdline="console=ttyS0")
    xml = raw_xml(image, StateLayout(tmp_path), "6f1c0000-0000-4000-8000-000000000001")
    assert "<kernel>/boot/k</kernel>" in xml
    assert "org.virtplane.guestd.0" in xml
