"""Fixtures of the database tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.database import Database, open_database


@pytest.fixture
async def sqlite_db(fresh_sqlite_url: str) -> AsyncIterator[Database]:
    """A connected database of this test alone, on SQLite."""
    db = open_database(fresh_sqlite_url)
    await db.connect()
    yield db
    await db.disconnect()
