"""PostgreSQL: statements run on the asyncpg connection that `databases` hands out
(`Connection.raw_connection`), compiled once for SQLAlchemy's asyncpg dialect (`$1`
parameters, the casts asyncpg needs).

The connection is this task's: inside an open `db.transaction()` a statement, and a
write unit (as a savepoint), belong to it.
"""

from __future__ import annotations

from functools import partial
from typing import Any, TypeVar

import databases
from sqlalchemy.engine import URL

from core.database.statements import Query, Row, StatementCache
from core.database.units import WriteUnit, drive_async

DIALECT = URL.create("postgresql+asyncpg").get_dialect()()
T = TypeVar("T")


class PostgresRunner:
    """Runs the service's statements on the pool of a `databases.Database`."""

    def __init__(self, database: databases.Database) -> None:
        self.database = database
        self.statements = StatementCache(DIALECT)

    async def start(self) -> None:
        """Nothing to start: `databases` owns the pool."""

    async def stop(self) -> None:
        """Nothing to stop: `databases` owns the pool."""

    async def fetch(self, query: Query) -> list[Row]:
        async with self.database.connection() as connection:
            return await self.fetch_on(connection.raw_connection, query)

    async def fetch_on(self, connection: Any, query: Query) -> list[Row]:
        """Run `query` on an asyncpg connection: one round trip (one pipelined batch for
        `Query.for_each`)."""
        prepared = self.statements.prepare(query.statement)
        if query.each is not None:
            if query.each:
                await connection.executemany(*prepared.many(query.each))
            return []
        sql, arguments = prepared.bind(query.values)
        return prepared.rows(await connection.fetch(sql, *arguments))

    async def run_in_transaction(self, unit: WriteUnit[T]) -> T:
        async with self.database.connection() as connection, connection.transaction():
            return await drive_async(unit, partial(self.fetch_on, connection.raw_connection))
