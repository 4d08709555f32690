from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from db import migrate
from db.session import Database


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'virtplane.db'}")
    migrate.upgrade(db.engine)
    yield db
    db.close()
