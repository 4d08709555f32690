"""Fixtures of the database's tests; their building blocks are in
tests.support.db_rig."""

from __future__ import annotations

from tests.support.db_rig import database

__all__ = ["database"]
