"""The benchmark's raw baseline uses the domain hostd would create (not timed)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hostd.layout import StateLayout
from tests.bench import guest_channel
from tests.bench.start_path import raw_xml
from tests.support.real import GuestImage


def test_the_raw_baseline_boots_the_same_domain_hostd_builds(tmp_path: Path) -> None:
    image = GuestImage(kernel="/boot/k", initrd="/boot/i", cmdline="console=ttyS0")
    xml = raw_xml(image, StateLayout(tmp_path), "6f1c0000-0000-4000-8000-000000000001")
    assert "<kernel>/boot/k</kernel>" in xml
    assert "org.virtplane.guestd.0" in xml


async def test_the_report_rate_bench_drives_a_real_hostd_within_its_budgets() -> None:
    # Not timed: the fake agents speak the protocol, hostd takes their reports
    # and none of them is throttled (the rate is within the per-VM budgets).
    workdir = Path(tempfile.mkdtemp(prefix="vp-"))  # short: socket paths
    try:
        results = await guest_channel.hostd_cpu(workdir, window=2.0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert results["reports_per_second"] > 0
    assert results["channels_throttled"] == 0
