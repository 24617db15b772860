"""SQLite: writes through the process's `SqliteWriter` (group commit), reads on a few
long-lived aiosqlite connections, one hop each (`databases` would open a connection, and
its thread, for every task)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any, TypeVar

import aiosqlite

from core.database.sqlite_connections import DIALECT, SqliteConnection, execute_on
from core.database.sqlite_writer import SqliteWriter
from core.database.statements import Query, Row, StatementCache
from core.database.units import WriteUnit, single

SQLITE_READERS = 4
"""Read connections per process: a slow read (a count over a large table) holds one."""

T = TypeVar("T")
_READER_OPTIONS: dict[str, Any] = {"isolation_level": None, "factory": SqliteConnection}


class SqliteRunner:
    """Runs the service's statements on a SQLite file: writes through the writer,
    reads on the read connections."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.writer = SqliteWriter(path, DIALECT)
        self.statements = StatementCache(DIALECT)
        self.readers: list[aiosqlite.Connection] = []
        self._next_reader: Iterator[aiosqlite.Connection] = iter(())
        self._opening = asyncio.Lock()

    async def start(self) -> None:
        """Start the writer; connections open on first use, so that a file that is
        unavailable for now makes statements fail, not the start."""
        self.writer.start()

    async def stop(self) -> None:
        readers, self.readers = self.readers, []
        try:
            for reader in readers:
                await reader.close()
        finally:
            await self.writer.stop()

    async def _reader(self) -> aiosqlite.Connection:
        """The next read connection, round robin; opened on first use."""
        if not self.readers:
            async with self._opening:
                if not self.readers:
                    self.readers = await self._open_readers()
                    self._next_reader = itertools.cycle(self.readers)
        return next(self._next_reader)

    async def _open_readers(self) -> list[aiosqlite.Connection]:
        readers: list[aiosqlite.Connection] = []
        try:
            for _ in range(SQLITE_READERS):
                readers.append(await aiosqlite.connect(self.path, **_READER_OPTIONS))
                await readers[-1].execute_fetchall("PRAGMA query_only=ON")
        except BaseException:
            for reader in readers:
                await reader.close()
            raise
        return readers

    async def fetch(self, query: Query) -> list[Row]:
        if query.writes or query.each is not None:
            return await self.writer.run(single(query))
        return await execute_on(await self._reader(), self.statements, query)

    async def fetch_on(self, connection: Any, query: Query) -> list[Row]:
        assert isinstance(connection, aiosqlite.Connection)
        return await execute_on(connection, self.statements, query)

    async def run_in_transaction(self, unit: WriteUnit[T]) -> T:
        return await self.writer.run(unit)
