"""SQLite connections: how every one is set up, how a transaction takes the write lock,
and how a statement runs on one (sqlite3 on its own thread, or aiosqlite).

Every connection (the writer's, the readers', and those `databases` opens, which is
given `SqliteConnection` as `sqlite3.connect`'s documented `factory`) runs in WAL mode
with a busy timeout and foreign keys on.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import aiosqlite
from sqlalchemy.engine import URL

from core.database.statements import Query, Row, StatementCache

SQLITE_BUSY_TIMEOUT_S = 30.0
SQLITE_BUSY_POLL_S = 0.0005

DIALECT = URL.create("sqlite").get_dialect()()


class SqliteConnection(sqlite3.Connection):
    """A connection set up for many writers in many processes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}").close()
        if self.execute("PRAGMA journal_mode").fetchone() != ("wal",):
            # Persistent, and needs the file to itself: once, the first time.
            _while_busy(self, "PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL is durable against process crashes (only an OS crash or
        # power loss can drop the last commits) and ten times faster than FULL.
        self.execute("PRAGMA synchronous=NORMAL").close()
        self.execute("PRAGMA foreign_keys=ON").close()


_BUSY_TIMEOUT_MS = int(SQLITE_BUSY_TIMEOUT_S * 1000)


def connect(path: str) -> SqliteConnection:
    """A connection in autocommit mode: transactions are begun explicitly."""
    connection = sqlite3.connect(path, isolation_level=None, factory=SqliteConnection)
    assert isinstance(connection, SqliteConnection)
    return connection


def begin_immediate(connection: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE: the write lock up front, so that a transaction that reads first
    cannot fail to upgrade its lock."""
    _while_busy(connection, "BEGIN IMMEDIATE")


def _while_busy(connection: sqlite3.Connection, sql: str) -> None:
    """Run `sql`, tried every `SQLITE_BUSY_POLL_S` while another process writes, for up
    to the busy timeout. SQLite's own busy handler sleeps 1, 2, 5, 10 ms... between
    tries: behind a steady writer in another process (the poller) a transaction waited
    about 4 ms for a lock held for less than 1 ms."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    connection.execute("PRAGMA busy_timeout=0").close()
    try:
        while True:
            try:
                connection.execute(sql).close()
                return
            except sqlite3.OperationalError as exc:
                # An extended code (SQLITE_BUSY_RECOVERY, say) is busy all the same.
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(SQLITE_BUSY_POLL_S)
    finally:
        connection.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}").close()


def execute(connection: sqlite3.Connection, statements: StatementCache, query: Query) -> list[Row]:
    """Run `query` on a sqlite3 connection, on its thread."""
    prepared = statements.prepare(query.statement)
    if query.each is not None:
        if query.each:
            connection.executemany(*prepared.many(query.each)).close()
        return []
    cursor = connection.execute(*prepared.bind(query.values))
    try:
        return prepared.rows(cursor.fetchall())
    finally:
        cursor.close()


async def execute_on(
    connection: aiosqlite.Connection, statements: StatementCache, query: Query
) -> list[Row]:
    """Run `query` on an aiosqlite connection: one hop to its thread."""
    prepared = statements.prepare(query.statement)
    if query.each is not None:
        if query.each:
            await connection.executemany(*prepared.many(query.each))
        return []
    sql, arguments = prepared.bind(query.values)
    return prepared.rows(await connection.execute_fetchall(sql, arguments))
