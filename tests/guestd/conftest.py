from __future__ import annotations

from pathlib import Path

import pytest

from tests.guestd.fakeroot import FakeRoot


@pytest.fixture
def fake_root(tmp_path: Path) -> FakeRoot:
    return FakeRoot.typical(tmp_path / "root")
