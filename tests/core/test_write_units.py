"""`run_in_transaction`: write units commit alone or not at all, also when SQLite
group-commits them with others in one transaction."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from asyncpg import UniqueViolationError

import core.database.sqlite_connections
import core.database.sqlite_writer
from core.clock import utcnow
from core.database import Database, Query, WriteUnit, fetch_all, run_in_transaction
from core.tables import clients

_INSERT_CLIENT = clients.insert().values(
    id=sa.bindparam("new_id"),
    name=sa.bindparam("new_name"),
    api_key_hash=sa.bindparam("new_hash"),
    created_at=sa.bindparam("now"),
)


class Refused(Exception):
    """A unit's own failure, after its write."""


def _insert(name: str, key_hash: str | None = None) -> Query:
    params = {"new_id": str(uuid.uuid4()), "new_name": name, "now": utcnow()}
    return Query(_INSERT_CLIENT, {**params, "new_hash": key_hash or uuid.uuid4().hex})


def _add(name: str, *, key_hash: str | None = None, then_fail: bool = False) -> WriteUnit[str]:
    yield _insert(name, key_hash)
    if then_fail:
        raise Refused(name)
    return name


async def _names(db: Database, prefix: str) -> set[str]:
    rows = await fetch_all(db, sa.select(clients.c.name).where(clients.c.name.like(f"{prefix}%")))
    return {row["name"] for row in rows}


async def test_concurrent_units_commit_but_those_that_fail_leave_nothing(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a taken key hash, and (on SQLite) a record of each batch's size
    prefix, taken = uuid.uuid4().hex, uuid.uuid4().hex
    await run_in_transaction(db, _add(f"{prefix}-taken", key_hash=taken))
    batches: list[int] = []
    commit = core.database.sqlite_writer._commit

    def recorded(connection: Any, statements: Any, batch: list[Any]) -> None:
        batches.append(len(batch))
        commit(connection, statements, batch)

    monkeypatch.setattr(core.database.sqlite_writer, "_commit", recorded)

    # When units run concurrently: one fails after its write, one is refused by the
    # database (a unique key), the others succeed
    units = {
        **{f"{prefix}-ok{n}": _add(f"{prefix}-ok{n}") for n in range(3)},
        f"{prefix}-fails": _add(f"{prefix}-fails", then_fail=True),
        f"{prefix}-refused": _add(f"{prefix}-refused", key_hash=taken),
        f"{prefix}-ok3": _add(f"{prefix}-ok3"),
    }
    results = await asyncio.gather(
        *(run_in_transaction(db, unit) for unit in units.values()), return_exceptions=True
    )

    # Then each caller gets its own outcome, and only the successful units were written
    outcome = dict(zip(units, results, strict=True))
    assert isinstance(outcome.pop(f"{prefix}-fails"), Refused)
    unique_violation = (
        sqlite3.IntegrityError if db.url.dialect == "sqlite" else UniqueViolationError
    )
    assert isinstance(outcome.pop(f"{prefix}-refused"), unique_violation)
    assert outcome == {name: name for name in outcome}
    assert await _names(db, prefix) == {*outcome, f"{prefix}-taken"}
    # and on SQLite they shared one transaction
    if db.url.dialect == "sqlite":
        assert batches == [len(units)]


def _holding_the_write_lock(path: str) -> sqlite3.Connection:
    """Another process's writer, as far as this one can tell."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_a_unit_whose_caller_is_cancelled_before_its_batch_writes_nothing(
    sqlite_db: Database, fresh_sqlite_url: str
) -> None:
    prefix = uuid.uuid4().hex
    # Given a batch waiting for the write lock, which another connection holds
    other = _holding_the_write_lock(fresh_sqlite_url.removeprefix("sqlite:///"))
    try:
        waiting = asyncio.create_task(run_in_transaction(sqlite_db, _add(f"{prefix}-cancelled")))
        await asyncio.sleep(0.05)

        # When its caller is cancelled (as when a client goes away)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        other.execute("COMMIT")
        other.close()

    # Then its unit never runs; the next one does
    await run_in_transaction(sqlite_db, _add(f"{prefix}-next"))
    assert await _names(sqlite_db, prefix) == {f"{prefix}-next"}


async def test_a_batch_that_gets_no_lock_fails_every_caller_and_writes_nothing(
    sqlite_db: Database, fresh_sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given another writer that keeps the lock past the busy timeout
    monkeypatch.setattr(core.database.sqlite_connections, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    prefix = uuid.uuid4().hex
    other = _holding_the_write_lock(fresh_sqlite_url.removeprefix("sqlite:///"))
    try:
        # When two units run
        results = await asyncio.gather(
            *(run_in_transaction(sqlite_db, _add(f"{prefix}-{n}")) for n in range(2)),
            return_exceptions=True,
        )
    finally:
        other.execute("COMMIT")
        other.close()

    # Then both callers get the database's "locked", and neither unit was written
    assert all(isinstance(result, sqlite3.OperationalError) for result in results), results
    assert all("locked" in str(result) for result in results)
    assert await _names(sqlite_db, prefix) == set()


async def test_a_statement_that_fails_ends_its_unit(db: Database) -> None:
    prefix, taken = uuid.uuid4().hex, uuid.uuid4().hex
    await run_in_transaction(db, _add(f"{prefix}-taken", key_hash=taken))
    ran_on: list[str] = []

    def twice(name: str) -> WriteUnit[None]:
        yield _insert(f"{name}-first")
        try:
            yield _insert(f"{name}-second", key_hash=taken)
        finally:
            ran_on.append("closed")
        ran_on.append("went on")

    with pytest.raises(Exception, match=r"(?i)unique"):
        await run_in_transaction(db, twice(prefix))

    assert ran_on == ["closed"]
    assert await _names(db, prefix) == {f"{prefix}-taken"}
