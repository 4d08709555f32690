"""The committed generated code is exactly what `make proto` produces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.real import REPO

GENERATED = REPO / "protos" / "virtplane" / "v1"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "protos" / "generate.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = tmp_path / "virtplane" / "v1"
    want = {p.name: p.read_bytes() for p in fresh.glob("*_pb2*.py*")}
    have = {p.name: p.read_bytes() for p in GENERATED.glob("*_pb2*.py*")}
    assert sorted(have) == sorted(want), "generated files differ; run `make proto`"
    stale = [name for name in want if want[name] != have[name]]
    assert not stale, f"stale generated code in {stale}; run `make proto`"
