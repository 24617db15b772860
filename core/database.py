"""All database access goes through here, so that the driver could be swapped later.

`open_database(url)` gives a `databases.Database` that is safe for concurrent writers:

- SQLite (aiosqlite): every connection runs in WAL mode with a busy timeout, every
  transaction starts with `BEGIN IMMEDIATE` (so a writer waits for the lock up front
  instead of failing to upgrade a read lock with "database is locked"), and
  connections are pooled instead of opened per task (each one is a thread).
- PostgreSQL (asyncpg): a connection pool; `postgres://` is accepted as an alias.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiosqlite
import databases
from databases.backends.sqlite import SQLiteBackend, SQLiteConnection, SQLitePool
from databases.backends.sqlite import SQLiteTransaction as _SQLiteTransaction
from databases.core import DatabaseURL

SQLITE_BUSY_TIMEOUT_S = 30.0
SQLITE_POOL_SIZE = 16

__all__ = ["Database", "open_database", "record_dict"]

Database = databases.Database


def record_dict(record: Any) -> dict[str, Any]:
    """A fetched row as a dict with every column type's result processing applied
    (`databases` skips it in `._mapping` on PostgreSQL)."""
    return {key: record[key] for key in record._mapping.keys()}  # noqa: SIM118 - asyncpg records iterate values


class _PooledSQLitePool(SQLitePool):
    """Keeps up to `SQLITE_POOL_SIZE` idle connections instead of one thread per task."""

    def __init__(self, url: DatabaseURL, **options: Any) -> None:
        super().__init__(url, **options)
        self._idle: list[aiosqlite.Connection] = []
        self._journal_mode_set = asyncio.Lock()

    async def acquire(self) -> aiosqlite.Connection:
        if self._idle:
            return self._idle.pop()
        connection = aiosqlite.connect(
            database=self._database,
            isolation_level=None,
            timeout=SQLITE_BUSY_TIMEOUT_S,
            **self._options,
        )
        await connection.__aenter__()
        async with self._journal_mode_set:
            await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        # In WAL mode NORMAL is durable against process crashes (only an OS crash or
        # power loss can drop the last commits) and ten times faster than FULL.
        await connection.execute("PRAGMA synchronous=NORMAL")
        await connection.execute("PRAGMA foreign_keys=ON")
        return connection

    async def release(self, connection: aiosqlite.Connection) -> None:
        if connection.in_transaction or len(self._idle) >= SQLITE_POOL_SIZE:
            await connection.__aexit__(None, None, None)
            return
        self._idle.append(connection)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.__aexit__(None, None, None)


class _ImmediateTransaction(_SQLiteTransaction):
    async def start(self, is_root: bool, extra_options: dict[Any, Any]) -> None:
        if not is_root:
            await super().start(is_root, extra_options)
            return
        self._is_root = True
        raw = self._connection._connection
        assert raw is not None, "Connection is not acquired"
        async with raw.execute("BEGIN IMMEDIATE") as cursor:
            await cursor.close()


class _ImmediateConnection(SQLiteConnection):
    def transaction(self) -> _ImmediateTransaction:
        return _ImmediateTransaction(self)


class ImmediateSQLiteBackend(SQLiteBackend):
    """SQLite backend with pooled WAL connections and `BEGIN IMMEDIATE` transactions."""

    def __init__(self, database_url: DatabaseURL | str, **options: Any) -> None:
        super().__init__(database_url, **options)
        self._pool = _PooledSQLitePool(self._database_url, **self._options)

    async def disconnect(self) -> None:
        await super().disconnect()
        assert isinstance(self._pool, _PooledSQLitePool)
        await self._pool.close()

    def connection(self) -> _ImmediateConnection:
        return _ImmediateConnection(self._pool, self._dialect)


class _Database(databases.Database):
    SUPPORTED_BACKENDS = {
        **databases.Database.SUPPORTED_BACKENDS,
        "sqlite": "core.database:ImmediateSQLiteBackend",
    }


def normalize_url(url: str) -> str:
    """`postgres://` is what many platforms hand out; `databases` wants `postgresql://`."""
    if url.startswith("postgres://"):
        return "postgresql://" + url.removeprefix("postgres://")
    return url


def open_database(url: str, *, pool_size: int = 10) -> databases.Database:
    """A not-yet-connected database for `url` (`sqlite:///PATH` or `postgresql://...`)."""
    url = normalize_url(url)
    if url.startswith("postgresql"):
        return _Database(url, min_size=1, max_size=pool_size)
    return _Database(url)
