from __future__ import annotations

from collections.abc import Iterator

import pytest

from db import migrate
from db.session import Database


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A database migrated to head, on each engine (see database_url)."""
    db = Database(database_url)
    migrate.upgrade(db.engine)
    yield db
    db.close()
