"""The benchmark's raw baseline uses the domain hostd would create (not timed)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from hostd.layout import StateLayout
from tests.bench import controller_migration, guest_channel, profiling, scale
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


def test_the_controller_migration_figures_are_medians_with_their_spread() -> None:
    sample = controller_migration.Sample(
        raw_s=[3.0, 2.0, 4.0, 100.0],
        raw_resumed_s=[1.0, 0.8, 1.2, 1.0],
        raw_downtime_ms=[100, 120, 80, 500],
        stack_s=[1.1, 1.2, 1.0, 9.0],
        downtime_ms=[90, 130, 110, 100],
        evacuate_s=[2.0, 3.0],
        evacuate_to_up_s=[1.5, 2.5],
    )
    got = controller_migration.figures(sample, rounds=2)
    assert (got["raw_migrate3_s"], got["migratevm_to_up_s"]) == (3.5, 1.15)
    assert got["ratio"] == pytest.approx(1.15 / 3.5)
    assert got["ratio_to_resumed"] == pytest.approx(1.15 / 1.0)
    assert (got["raw_downtime_ms"], got["downtime_ms"]) == (110, 105)
    assert got["downtime_over_raw_ms"] == -5
    assert (got["raw_downtime_max_ms"], got["downtime_max_ms"]) == (500, 130)
    assert (got["evacuate_s"], got["evacuate_to_up_s"], got["evacuate_vms"]) == (2.5, 2.0, 3)
    # statistics.quantiles' exclusive method: the quartiles of 2, 3, 4, 100
    # are 2.25 and 76.
    assert got["raw_migrate3_iqr_s"] == pytest.approx(76 - 2.25)
    assert got["moves"] == 4


def test_the_growth_table_follows_every_scale_run_by_engine_and_host_count() -> None:
    groups = {
        "scale_300_sqlite": {"hosts": 300.0, "startvm_per_s": 40.0, "watch_p99_s": 0.1},
        "scale_100_postgresql": {"hosts": 100.0, "startvm_per_s": 30.0},
        "start_path": {"rounds": 5.0},
    }
    assert scale.growth(groups) == {
        "postgresql_100h_startvm_per_s": 30.0,
        "sqlite_300h_startvm_per_s": 40.0,
        "sqlite_300h_watch_p99_s": 0.1,
    }


def test_a_profile_counts_each_function_once_a_sample(tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    raw.write_text(
        "main (a/m.py:1);f (x/y.py:2);f (x/y.py:3) 3\n"
        "main (a/m.py:1);g (x/z.py:9) 1\n"
    )  # fmt: skip
    assert dict(profiling.top(raw)) == {"a/m.py:main": 1.0, "x/y.py:f": 0.75, "x/z.py:g": 0.25}
