"""The service's database object, and the one way to run a statement on it.

`open_database(url)` gives a `Database`: a `databases.Database` (its pool, its per-task
connections and `db.transaction()`), with a `runner` that runs the service's statements
on the driver's own connection, each compiled once (`statements`):

- `fetch_all(db, statement, values)` / `fetch_one(...)`: one statement. Whether it
  writes is the statement's to say (INSERT, UPDATE, DELETE): on SQLite a write goes to
  the writer (group-committed), a read to a read connection; on PostgreSQL either runs
  on the task's pooled connection.
- `run_in_transaction(db, unit)`: a write unit (`units`), in a transaction of its own.
  Do not run one inside `db.transaction()`: on SQLite it would wait for the lock that
  transaction holds.
- `execute_in_open_transaction(db, query)`: one statement on this task's `databases`
  connection, so that it belongs to the `db.transaction()` the caller holds open.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import databases
from sqlalchemy.sql.expression import ClauseElement

from core.database.postgres import PostgresRunner
from core.database.sqlite import SqliteRunner
from core.database.sqlite_connections import SQLITE_BUSY_TIMEOUT_S, SqliteConnection
from core.database.statements import Query, Row
from core.database.units import WriteUnit
from core.database.urls import SQLITE, DatabaseUrl, parse_database_url

T = TypeVar("T")
DEFAULT_POOL_SIZE = 10


class Database(databases.Database):
    """`databases.Database`, which also starts and stops the runner of our statements."""

    def __init__(self, url: DatabaseUrl, **options: Any) -> None:
        super().__init__(str(url), **options)
        self.runner: SqliteRunner | PostgresRunner = (
            SqliteRunner(url.sqlite_path) if url.backend == SQLITE else PostgresRunner(self)
        )

    async def connect(self) -> None:
        if self.is_connected:
            return
        await super().connect()
        try:
            await self.runner.start()
        except BaseException:
            await super().disconnect()
            raise

    async def disconnect(self) -> None:
        if not self.is_connected:
            return
        try:
            await self.runner.stop()
        finally:
            await super().disconnect()


def open_database(url: str | DatabaseUrl, *, pool_size: int = DEFAULT_POOL_SIZE) -> Database:
    """A not-yet-connected database for `url` (`sqlite:///PATH` or `postgresql://...`);
    `pool_size` connections at most on PostgreSQL."""
    parsed = parse_database_url(url)
    if parsed.backend == SQLITE:
        # Options of the connections `databases` opens itself (`db.transaction()`).
        return Database(parsed, factory=SqliteConnection, timeout=SQLITE_BUSY_TIMEOUT_S)
    return Database(parsed, min_size=1, max_size=pool_size)


async def fetch_all(
    db: Database, statement: ClauseElement, values: Mapping[str, Any] | None = None
) -> list[Row]:
    """Run `statement` with the values of its bind parameters; every row it returns."""
    return await db.runner.fetch(Query(statement, values or {}))


async def fetch_one(
    db: Database, statement: ClauseElement, values: Mapping[str, Any] | None = None
) -> Row | None:
    """Run `statement` (as `fetch_all`); its first row, or None."""
    rows = await db.runner.fetch(Query(statement, values or {}))
    return rows[0] if rows else None


async def run_in_transaction(db: Database, unit: WriteUnit[T]) -> T:
    """Run the write unit `unit` (see `core.database.units`) in a transaction of its
    own: all it wrote is committed when this returns, nothing of it if this raises."""
    return await db.runner.run_in_transaction(unit)


async def execute_in_open_transaction(db: Database, query: Query) -> list[Row]:
    """Run `query` on this task's `databases` connection: inside the `db.transaction()`
    the caller holds open, it commits or rolls back with the rest of it."""
    async with db.connection() as connection:
        return await db.runner.fetch_on(connection.raw_connection, query)


def record_dict(record: Any) -> dict[str, Any]:
    """A row read through `databases` itself (`db.fetch_one`, ...) as a dict, each value
    through its column's type (`databases` skips that when it is iterated)."""
    return {key: record[key] for key in record.keys()}  # noqa: SIM118 - asyncpg records iterate values
