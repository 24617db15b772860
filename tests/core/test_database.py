"""`core.database`: SQLite that never says "database is locked", and rows read alike on
both backends."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from core.clock import utcnow
from core.database import (
    Database,
    execute_many,
    fetch_bound,
    normalize_url,
    open_database,
    record_dict,
)
from core.tables import clients, webhook_configs

WRITERS = 50


async def _pragmas(db: Database) -> tuple[str, int, int]:
    async with db.connection() as connection:
        return (
            str(await connection.fetch_val(sa.text("PRAGMA journal_mode"))),
            int(await connection.fetch_val(sa.text("PRAGMA busy_timeout"))),
            int(await connection.fetch_val(sa.text("PRAGMA foreign_keys"))),
        )


async def test_every_sqlite_connection_is_wal_with_a_busy_timeout(sqlite_db: Database) -> None:
    # Concurrent tasks get different connections from the pool: each one is set up.
    answers = await asyncio.gather(*(_pragmas(sqlite_db) for _ in range(8)))
    assert set(answers) == {("wal", 30_000, 1)}


async def test_a_sqlite_transaction_takes_the_write_lock_at_begin(
    sqlite_db: Database, fresh_sqlite_url: str
) -> None:
    path = fresh_sqlite_url.removeprefix("sqlite:///")
    async with sqlite_db.transaction():
        # Nothing written yet, and still another writer cannot begin: BEGIN IMMEDIATE.
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()


async def _read_then_write(db: Database, n: int) -> None:
    # A deferred transaction that reads first fails to upgrade its lock under contention.
    async with db.transaction():
        await db.fetch_val(sa.select(sa.func.count()).select_from(clients))
        await db.execute(
            clients.insert().values(
                id=str(uuid.uuid4()),
                name=f"c{n}",
                api_key_hash=uuid.uuid4().hex,
                created_at=utcnow(),
            )
        )


async def test_concurrent_read_then_write_transactions_never_fail(
    sqlite_db: Database, fresh_sqlite_url: str
) -> None:
    second = open_database(fresh_sqlite_url)  # another pool, as another process would have
    await second.connect()
    try:
        await asyncio.gather(
            *(_read_then_write(sqlite_db if n % 2 else second, n) for n in range(WRITERS))
        )
    finally:
        await second.disconnect()
    count = await sqlite_db.fetch_val(sa.select(sa.func.count()).select_from(clients))
    assert count == WRITERS


async def test_a_failed_transaction_rolls_back_and_its_connection_is_reusable(
    sqlite_db: Database,
) -> None:
    with pytest.raises(RuntimeError):
        async with sqlite_db.transaction():
            await _read_then_write(sqlite_db, 0)
            raise RuntimeError("boom")
    assert await sqlite_db.fetch_val(sa.select(sa.func.count()).select_from(clients)) == 0
    await _read_then_write(sqlite_db, 1)
    assert await sqlite_db.fetch_val(sa.select(sa.func.count()).select_from(clients)) == 1


async def test_rows_read_back_typed_on_both_backends(db: Database) -> None:
    client_id, config_id = str(uuid.uuid4()), str(uuid.uuid4())
    moment = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    await db.execute(
        clients.insert().values(
            id=client_id, name="typed", api_key_hash=uuid.uuid4().hex, created_at=moment
        )
    )
    await db.execute(
        webhook_configs.insert().values(
            id=config_id,
            client_id=client_id,
            url="https://example.com/",
            authorization_token="t" * 16,
            subscribed_events=["survey_created", "survey_finished"],
            signing_secret="whsec_x",
            created_at=moment,
            updated_at=moment,
        )
    )

    row = record_dict(
        await db.fetch_one(sa.select(webhook_configs).where(webhook_configs.c.id == config_id))
    )

    assert row["subscribed_events"] == ["survey_created", "survey_finished"]
    assert row["created_at"] == moment and row["created_at"].tzinfo is not None
    assert row["enabled"] is True
    assert row["deleted_at"] is None


async def test_naive_datetimes_are_refused(db: Database) -> None:
    with pytest.raises(Exception, match="naive"):
        await db.execute(
            clients.insert().values(
                id=str(uuid.uuid4()),
                name="naive",
                api_key_hash=uuid.uuid4().hex,
                created_at=datetime(2026, 1, 1),
            )
        )


_INSERT_CLIENT = clients.insert().values(
    id=sa.bindparam("id"),
    name=sa.bindparam("name"),
    api_key_hash=sa.bindparam("key_hash"),
    created_at=sa.bindparam("created_at"),
)


def _client_rows(count: int) -> list[dict[str, object]]:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    return [
        {
            "id": str(uuid.uuid4()),
            "name": f"many {n} {uuid.uuid4().hex}",
            "key_hash": uuid.uuid4().hex,
            "created_at": moment + timedelta(seconds=n),
        }
        for n in range(count)
    ]


async def test_execute_many_writes_every_row_through_the_column_types(db: Database) -> None:
    rows = _client_rows(5)

    await execute_many(db, _INSERT_CLIENT, rows)

    stored = [
        record_dict(row)
        for row in await db.fetch_all(
            sa.select(clients)
            .where(clients.c.id.in_([r["id"] for r in rows]))
            .order_by(clients.c.created_at)
        )
    ]
    assert [(r["id"], r["name"], r["api_key_hash"], r["created_at"]) for r in stored] == [
        (r["id"], r["name"], r["key_hash"], r["created_at"]) for r in rows
    ]
    assert stored[0]["created_at"].tzinfo is not None


async def test_execute_many_in_a_failed_transaction_writes_nothing(db: Database) -> None:
    # Given rows of which the last repeats the first's key hash (a unique column)
    rows = _client_rows(3)
    rows[-1]["key_hash"] = rows[0]["key_hash"]

    with pytest.raises(Exception, match=r"(?i)unique"):
        async with db.transaction():
            await execute_many(db, _INSERT_CLIENT, rows)

    ids = [r["id"] for r in rows]
    assert await db.fetch_all(sa.select(clients).where(clients.c.id.in_(ids))) == []


async def test_execute_many_refuses_a_statement_whose_sql_varies(db: Database) -> None:
    with pytest.raises(ValueError, match="must not vary"):
        await execute_many(db, clients.delete().where(clients.c.id.in_(["a", "b"])), [{"x": 1}])


_CLIENTS_SINCE = sa.select(clients.c.id, clients.c.created_at).where(
    clients.c.name == sa.bindparam("name"),
    clients.c.created_at >= sa.bindparam("since", type_=clients.c.created_at.type),
)


async def test_fetch_bound_runs_a_statement_built_once_with_each_calls_values(
    db: Database,
) -> None:
    rows = _client_rows(3)
    await execute_many(db, _INSERT_CLIENT, rows)

    for row in rows:
        found = [
            record_dict(r)
            for r in await fetch_bound(
                db, _CLIENTS_SINCE, {"name": row["name"], "since": row["created_at"]}
            )
        ]
        assert found == [{"id": row["id"], "created_at": row["created_at"]}]
    later = rows[0]["created_at"] + timedelta(days=1)  # type: ignore[operator]
    assert await fetch_bound(db, _CLIENTS_SINCE, {"name": rows[0]["name"], "since": later}) == []


def test_postgres_scheme_is_normalized() -> None:
    assert normalize_url("postgres://u@h/db") == "postgresql://u@h/db"
    assert normalize_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"
