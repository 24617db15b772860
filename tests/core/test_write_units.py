"""`run_unit`: write units commit alone or not at all, also when SQLite group-commits
them with others in one transaction."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa
from asyncpg import UniqueViolationError

import core.database
from core.clock import utcnow
from core.database import Bound, Database, WriteUnit, run_unit
from core.tables import clients
from tests.outbox.helpers import eventually

_INSERT_CLIENT = clients.insert().values(
    id=sa.bindparam("new_id"),
    name=sa.bindparam("new_name"),
    api_key_hash=sa.bindparam("new_hash"),
    created_at=sa.bindparam("now"),
)


class Refused(Exception):
    """A unit's own failure, after its write."""


def _insert(name: str, key_hash: str | None = None) -> Bound:
    params = {"new_id": str(uuid.uuid4()), "new_name": name, "now": utcnow()}
    return Bound(_INSERT_CLIENT, {**params, "new_hash": key_hash or uuid.uuid4().hex})


def _add(name: str, *, key_hash: str | None = None, then_fail: bool = False) -> WriteUnit[str]:
    yield _insert(name, key_hash)
    if then_fail:
        raise Refused(name)
    return name


def _add_twice(name: str) -> WriteUnit[str]:
    yield sa.select(clients.c.id).where(clients.c.name == name)
    yield _insert(name)
    yield _insert(name)
    return name


async def _names(db: Database, prefix: str) -> set[str]:
    rows = await db.fetch_all(sa.select(clients.c.name).where(clients.c.name.like(f"{prefix}%")))
    return {row["name"] for row in rows}


async def test_concurrent_units_commit_but_those_that_fail_leave_nothing(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a taken key hash, and (on SQLite) a record of each batch's size
    prefix, taken = uuid.uuid4().hex, uuid.uuid4().hex
    await run_unit(db, _add(f"{prefix}-taken", key_hash=taken))
    batches: list[int] = []
    run_batch = core.database._run_batch

    def recorded(raw: Any, compiler: Any, batch: list[Any]) -> None:
        batches.append(len(batch))
        run_batch(raw, compiler, batch)

    monkeypatch.setattr(core.database, "_run_batch", recorded)

    # When units run concurrently: one fails after its write, one is refused by the
    # database (a unique key), the others succeed
    units = {
        **{f"{prefix}-ok{n}": _add(f"{prefix}-ok{n}") for n in range(3)},
        f"{prefix}-fails": _add(f"{prefix}-fails", then_fail=True),
        f"{prefix}-refused": _add(f"{prefix}-refused", key_hash=taken),
        f"{prefix}-ok3": _add(f"{prefix}-ok3"),
    }
    results = await asyncio.gather(
        *(run_unit(db, unit) for unit in units.values()), return_exceptions=True
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


async def test_a_unit_inside_a_transaction_joins_it(db: Database) -> None:
    prefix = uuid.uuid4().hex

    with pytest.raises(Refused):
        async with db.transaction():
            await run_unit(db, _add(f"{prefix}-rolled-back"))
            raise Refused("the enclosing transaction")
    async with db.transaction():
        await run_unit(db, _add(f"{prefix}-committed"))

    assert await _names(db, prefix) == {f"{prefix}-committed"}


@pytest.mark.parametrize("inside_transaction", [False, True])
async def test_a_one_write_unit_may_not_run_a_statement_after_its_write(
    db: Database, inside_transaction: bool
) -> None:
    with pytest.raises(RuntimeError, match="after its write"):
        if inside_transaction:
            async with db.transaction():
                await run_unit(db, _add_twice(uuid.uuid4().hex), one_write=True)
        else:
            await run_unit(db, _add_twice(uuid.uuid4().hex), one_write=True)


async def test_a_unit_whose_caller_is_cancelled_before_its_batch_writes_nothing(
    sqlite_db: Database,
) -> None:
    prefix = uuid.uuid4().hex
    # Given a batch waiting for the process's write lock
    async with sqlite_db.transaction():
        others = asyncio.all_tasks()
        waiting = asyncio.create_task(run_unit(sqlite_db, _add(f"{prefix}-cancelled")))
        await eventually(partial(_waits_for_a_lock, others), timeout_s=5, every_s=0)

        # When its caller is cancelled (as when a client goes away)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    # Then its unit never runs; the next one does
    await run_unit(sqlite_db, _add(f"{prefix}-next"))
    assert await _names(sqlite_db, prefix) == {f"{prefix}-next"}


async def _waits_for_a_lock(others: set[asyncio.Task[Any]]) -> bool:
    """Whether a task not among `others` is blocked in `asyncio.Lock.acquire`, however
    deep in what it awaits."""
    for task in asyncio.all_tasks() - others:
        awaited: Any = task.get_coro()
        while awaited is not None:
            if getattr(awaited, "cr_code", None) is asyncio.Lock.acquire.__code__:
                return True
            awaited = getattr(awaited, "cr_await", None)
    return False
