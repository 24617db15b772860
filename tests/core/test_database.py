"""`core.database`: SQLite that never says "database is locked", statements compiled
once and rows read alike on both backends, and database URLs."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from core.clock import utcnow
from core.database import (
    Database,
    DatabaseUrlError,
    Query,
    WriteUnit,
    fetch_all,
    fetch_one,
    open_database,
    parse_database_url,
    record_dict,
    run_in_transaction,
)
from core.database.units import single
from core.tables import clients, webhook_configs

WRITERS = 50
_PRAGMAS = sa.text(
    "SELECT journal_mode, timeout AS busy_timeout, foreign_keys"
    " FROM pragma_journal_mode(), pragma_busy_timeout(), pragma_foreign_keys()"
).columns(
    sa.column("journal_mode", sa.String),
    sa.column("busy_timeout", sa.Integer),
    sa.column("foreign_keys", sa.Integer),
)
EXPECTED_PRAGMAS = {"journal_mode": "wal", "busy_timeout": 30_000, "foreign_keys": 1}


async def _pragmas(db: Database) -> tuple[str, int, int]:
    async with db.connection() as connection:
        return (
            str(await connection.fetch_val(sa.text("PRAGMA journal_mode"))),
            int(await connection.fetch_val(sa.text("PRAGMA busy_timeout"))),
            int(await connection.fetch_val(sa.text("PRAGMA foreign_keys"))),
        )


async def test_every_sqlite_connection_is_wal_with_a_busy_timeout(sqlite_db: Database) -> None:
    # Those `databases` opens (each task gets its own) ...
    answers = await asyncio.gather(*(_pragmas(sqlite_db) for _ in range(8)))
    assert set(answers) == {("wal", 30_000, 1)}
    # ... the read connections, and the writer's
    reads = await asyncio.gather(*(fetch_all(sqlite_db, _PRAGMAS) for _ in range(8)))
    assert all(rows == [EXPECTED_PRAGMAS] for rows in reads)
    assert await run_in_transaction(sqlite_db, single(Query(_PRAGMAS))) == [EXPECTED_PRAGMAS]


def _other_writer_waits(path: str) -> WriteUnit[None]:
    yield Query(sa.select(sa.func.count().label("n")).select_from(clients))
    # Nothing written yet, and still another writer cannot begin: BEGIN IMMEDIATE.
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()


async def test_a_sqlite_write_unit_takes_the_write_lock_at_begin(
    sqlite_db: Database, fresh_sqlite_url: str
) -> None:
    await run_in_transaction(
        sqlite_db, _other_writer_waits(fresh_sqlite_url.removeprefix("sqlite:///"))
    )


def _read_then_write(n: int, *, then_fail: bool = False) -> WriteUnit[None]:
    # A deferred transaction that reads first fails to upgrade its lock under contention.
    yield Query(sa.select(sa.func.count().label("n")).select_from(clients))
    yield Query(
        clients.insert().values(
            id=str(uuid.uuid4()), name=f"c{n}", api_key_hash=uuid.uuid4().hex, created_at=utcnow()
        )
    )
    if then_fail:
        raise RuntimeError("boom")


_COUNT_CLIENTS = sa.select(sa.func.count().label("n")).select_from(clients)


async def test_concurrent_read_then_write_transactions_never_fail(
    sqlite_db: Database, fresh_sqlite_url: str
) -> None:
    second = open_database(fresh_sqlite_url)  # another writer, as another process has
    await second.connect()
    try:
        await asyncio.gather(
            *(
                run_in_transaction(sqlite_db if n % 2 else second, _read_then_write(n))
                for n in range(WRITERS)
            )
        )
    finally:
        await second.disconnect()
    assert await fetch_one(sqlite_db, _COUNT_CLIENTS) == {"n": WRITERS}


async def test_a_failed_unit_rolls_back_and_the_writer_goes_on(sqlite_db: Database) -> None:
    with pytest.raises(RuntimeError):
        await run_in_transaction(sqlite_db, _read_then_write(0, then_fail=True))
    assert await fetch_one(sqlite_db, _COUNT_CLIENTS) == {"n": 0}
    await run_in_transaction(sqlite_db, _read_then_write(1))
    assert await fetch_one(sqlite_db, _COUNT_CLIENTS) == {"n": 1}


async def _typed_config(db: Database) -> tuple[str, datetime]:
    client_id, config_id = str(uuid.uuid4()), str(uuid.uuid4())
    moment = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    await fetch_all(
        db,
        clients.insert().values(
            id=client_id, name="typed", api_key_hash=uuid.uuid4().hex, created_at=moment
        ),
    )
    await fetch_all(
        db,
        webhook_configs.insert().values(
            id=config_id,
            client_id=client_id,
            url="https://example.com/",
            authorization_token="t" * 16,
            subscribed_events=["survey_created", "survey_finished"],
            signing_secret="whsec_x",
            created_at=moment,
            updated_at=moment,
        ),
    )
    return config_id, moment


@pytest.mark.parametrize("through", ["core.database", "databases"])
async def test_rows_read_back_typed_on_both_backends(db: Database, through: str) -> None:
    config_id, moment = await _typed_config(db)
    query = sa.select(webhook_configs).where(webhook_configs.c.id == config_id)

    if through == "databases":
        row: Any = record_dict(await db.fetch_one(query))
    else:
        row = await fetch_one(db, query)

    assert row["subscribed_events"] == ["survey_created", "survey_finished"]
    assert row["created_at"] == moment and row["created_at"].tzinfo is not None
    assert row["enabled"] is True
    assert row["deleted_at"] is None


async def test_naive_datetimes_are_refused(db: Database) -> None:
    insert = clients.insert().values(
        id=str(uuid.uuid4()),
        name="naive",
        api_key_hash=uuid.uuid4().hex,
        created_at=datetime(2026, 1, 1),
    )
    with pytest.raises(Exception, match="naive"):
        await fetch_all(db, insert)
    with pytest.raises(Exception, match="naive"):
        await db.execute(insert)


_INSERT_CLIENT = clients.insert().values(
    id=sa.bindparam("id"),
    name=sa.bindparam("name"),
    api_key_hash=sa.bindparam("key_hash"),
    created_at=sa.bindparam("created_at"),
)


def _client_rows(count: int) -> list[dict[str, Any]]:
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


def _for_each(statement: Any, rows: list[dict[str, Any]]) -> WriteUnit[list[Any]]:
    return single(Query.for_each(statement, rows))


async def test_a_statement_for_each_row_writes_every_row_through_the_column_types(
    db: Database,
) -> None:
    rows = _client_rows(5)

    assert await run_in_transaction(db, _for_each(_INSERT_CLIENT, rows)) == []

    stored = await fetch_all(
        db,
        sa.select(clients)
        .where(clients.c.id.in_([r["id"] for r in rows]))
        .order_by(clients.c.created_at),
    )
    assert [(r["id"], r["name"], r["api_key_hash"], r["created_at"]) for r in stored] == [
        (r["id"], r["name"], r["key_hash"], r["created_at"]) for r in rows
    ]
    assert stored[0]["created_at"].tzinfo is not None


async def test_a_statement_for_each_row_in_a_failed_unit_writes_nothing(db: Database) -> None:
    # Given rows of which the last repeats the first's key hash (a unique column)
    rows = _client_rows(3)
    rows[-1]["key_hash"] = rows[0]["key_hash"]

    with pytest.raises(Exception, match=r"(?i)unique"):
        await run_in_transaction(db, _for_each(_INSERT_CLIENT, rows))

    ids = [r["id"] for r in rows]
    assert await fetch_all(db, sa.select(clients).where(clients.c.id.in_(ids))) == []


async def test_a_statement_for_each_row_must_not_vary_with_its_values(db: Database) -> None:
    varying = clients.delete().where(clients.c.id.in_(["a", "b"]))
    with pytest.raises(ValueError, match="must not vary"):
        await run_in_transaction(db, _for_each(varying, [{"x": 1}]))


_CLIENTS_SINCE = sa.select(clients.c.id, clients.c.created_at).where(
    clients.c.name == sa.bindparam("name"),
    clients.c.created_at >= sa.bindparam("since", type_=clients.c.created_at.type),
)


async def test_a_statement_built_once_runs_with_each_calls_values(db: Database) -> None:
    rows = _client_rows(3)
    await run_in_transaction(db, _for_each(_INSERT_CLIENT, rows))

    for row in rows:
        found = await fetch_all(
            db, _CLIENTS_SINCE, {"name": row["name"], "since": row["created_at"]}
        )
        assert found == [{"id": row["id"], "created_at": row["created_at"]}]
    later = rows[0]["created_at"] + timedelta(days=1)
    assert await fetch_all(db, _CLIENTS_SINCE, {"name": rows[0]["name"], "since": later}) == []


async def test_a_write_returns_the_rows_of_its_returning(db: Database) -> None:
    [row] = _client_rows(1)
    await run_in_transaction(db, _for_each(_INSERT_CLIENT, [row]))
    renamed = (
        clients.update()
        .where(clients.c.id == row["id"])
        .values(name="renamed")
        .returning(clients.c.id, clients.c.name)
    )

    assert await fetch_all(db, renamed) == [{"id": row["id"], "name": "renamed"}]
    assert await fetch_one(db, renamed.where(clients.c.id == "none")) is None


async def test_a_statement_that_varies_binds_its_other_values_through_their_types(
    db: Database,
) -> None:
    # An IN of a list expands per call; the JSON and the aware time beside it must still
    # go through their types (a dict and an aware datetime are no driver values).
    config_id, _ = await _typed_config(db)
    later = datetime(2027, 3, 4, 5, 6, 7, tzinfo=UTC)
    update = (
        webhook_configs.update()
        .where(webhook_configs.c.id.in_([config_id, str(uuid.uuid4())]))
        .values(
            subscribed_events=sa.bindparam(
                "events", type_=webhook_configs.c.subscribed_events.type
            ),
            updated_at=sa.bindparam("at", type_=webhook_configs.c.updated_at.type),
        )
        .returning(webhook_configs.c.subscribed_events, webhook_configs.c.updated_at)
    )

    rows = await run_in_transaction(db, single(Query(update, {"events": ["x"], "at": later})))

    assert rows == [{"subscribed_events": ["x"], "updated_at": later}]


def test_database_urls_are_parsed_once_with_postgres_as_an_alias() -> None:
    url = parse_database_url("postgres://app:s3cr3t@db.internal:5433/webhooks")
    assert (url.backend, url.redacted) == (
        "postgresql",
        "postgresql://app:***@db.internal:5433/webhooks",
    )
    assert str(url) == "postgresql://app:s3cr3t@db.internal:5433/webhooks"
    assert url.alembic_url.startswith("postgresql+asyncpg://app:s3cr3t@")
    assert parse_database_url("postgresql://u@h/db").backend == "postgresql"
    sqlite = parse_database_url("sqlite:///./data/webhooks.db")
    assert (sqlite.backend, sqlite.sqlite_path) == ("sqlite", "./data/webhooks.db")
    assert sqlite.alembic_url == "sqlite+aiosqlite:///./data/webhooks.db"


@pytest.mark.parametrize(
    "text",
    [
        "mysql://root@127.0.0.1/webhooks",
        "not a url",
        "postgresql+asyncpg://u:s3cr3t@h/db",
        "sqlite:///",
        "sqlite:///:memory:",
    ],
)
def test_other_database_urls_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(DatabaseUrlError) as refused:
        parse_database_url(text)
    assert "s3cr3t" not in str(refused.value)
