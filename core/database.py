"""All database access goes through here, so that the driver could be swapped later.

`open_database(url)` gives a `databases.Database` that is safe for concurrent writers:

- SQLite (aiosqlite): every connection runs in WAL mode with a busy timeout, every
  transaction starts with `BEGIN IMMEDIATE` (so a writer waits for the lock up front
  instead of failing to upgrade a read lock with "database is locked"), connections
  are pooled instead of opened per task (each one is a thread), and a statement is one
  hop to the connection's thread (`databases` makes two or three).
- PostgreSQL (asyncpg): a connection pool; `postgres://` is accepted as an alias.

On both, compiled SQL is cached by SQLAlchemy's statement cache key, as SQLAlchemy's own
engine does: `databases` compiles every statement on every call, which cost about 1 ms of
CPU per statement, more than running it.

`run_unit(db, unit)` runs a short write transaction written as a generator of statements
(`WriteUnit`). On PostgreSQL that is an ordinary transaction (or none, for a unit whose
only write is its last statement). On SQLite, where each hop is an event-loop iteration
with the process's write lock held, the units of concurrent callers run in ONE hop and
ONE transaction, each in a savepoint of its own: group commit.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiosqlite
import databases
import sqlalchemy as sa
from databases.backends.common.records import Record, Row, create_column_maps
from databases.backends.postgres import PostgresBackend, PostgresConnection
from databases.backends.sqlite import (
    CompilationContext,
    SQLiteBackend,
    SQLiteConnection,
    SQLitePool,
)
from databases.backends.sqlite import SQLiteTransaction as _SQLiteTransaction
from databases.core import DatabaseURL
from sqlalchemy.engine.cursor import CursorResultMetaData
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql import ClauseElement, ColumnElement, Select
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.sql.ddl import DDLElement

SQLITE_BUSY_TIMEOUT_S = 30.0
SQLITE_BUSY_POLL_S = 0.0005
SQLITE_POOL_SIZE = 16
COMPILE_CACHE_SIZE = 1000
GROUP_COMMIT_MAX_UNITS = 64

__all__ = [
    "AllRows",
    "Bound",
    "Database",
    "Many",
    "Slots",
    "WriteUnit",
    "execute_many",
    "fetch_bound",
    "fetch_one",
    "open_database",
    "record_dict",
    "run_unit",
]

Database = databases.Database
T = TypeVar("T")


def record_dict(record: Any) -> dict[str, Any]:
    """A fetched row as a dict with every column type's result processing applied
    (`databases` skips it in `._mapping` on PostgreSQL)."""
    return {key: record[key] for key in record._mapping.keys()}  # noqa: SIM118 - asyncpg records iterate values


@dataclass(frozen=True)
class _Prepared:
    compiled: Compiled
    sql: str
    keys: list[str]  # the order of the driver's positional arguments

    def arguments(self, *, extracted: Any, values: Mapping[str, Any] | None = None) -> list[Any]:
        """The driver's positional arguments: this statement's bound values (or `values`
        by bind parameter name), through each type's bind processing."""
        params = self.compiled.construct_params(params=values, extracted_parameters=extracted) or {}
        processors = self.compiled._bind_processors  # type: ignore[attr-defined]
        return [processors[k](params[k]) if k in processors else params[k] for k in self.keys]


class _CompileCache:
    """Compiled statements by SQLAlchemy cache key (which leaves out bound values), or,
    for statements built once (`bind`, `execute_many`), by the statement itself."""

    def __init__(self, number: Callable[[Compiled], tuple[str, list[str]]]) -> None:
        self._number = number
        self._entries: dict[Any, _Prepared] = {}

    def prepare(self, dialect: Dialect, query: ClauseElement) -> tuple[_Prepared, list[Any]] | None:
        """The prepared SQL and this call's arguments; None for what cannot be cached
        (DDL, IN lists whose length shapes the SQL, literal-rendered values)."""
        if isinstance(query, DDLElement):
            return None
        key = query._generate_cache_key()
        if key is None or any(b.expanding or b.literal_execute for b in key.bindparams):
            return None
        prepared = self._entries.get(key.key)
        if prepared is None:
            prepared = self._store(key.key, self._compile(dialect, query, key))
        return prepared, prepared.arguments(extracted=key.bindparams)

    def prepare_bound(
        self, dialect: Dialect, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[_Prepared, list[list[Any]]]:
        """The prepared SQL of a statement built once, cached as the object itself (no
        cache key is computed), and one argument list per row of bind parameter values
        by name."""
        prepared = self._entries.get(statement)
        if prepared is None:
            prepared = self._compile(dialect, statement, None)
            if any(b.expanding or b.literal_execute for b in prepared.compiled.binds.values()):  # type: ignore[attr-defined]
                raise ValueError("a bound statement's SQL must not vary with its values")
            self._store(statement, prepared)
        return prepared, [prepared.arguments(extracted=None, values=row) for row in rows]

    def _compile(self, dialect: Dialect, query: ClauseElement, key: Any) -> _Prepared:
        compiled = query._compiler(
            dialect, cache_key=key, compile_kwargs={"render_postcompile": True}
        )
        return _Prepared(compiled, *self._number(compiled))

    def _store(self, key: Any, prepared: _Prepared) -> _Prepared:
        if len(self._entries) >= COMPILE_CACHE_SIZE:
            self._entries.clear()
        self._entries[key] = prepared
        return prepared


@dataclass(frozen=True)
class Bound:
    """A statement built once with `sa.bindparam(name)` placeholders, and one call's
    values by name (see `fetch_bound`)."""

    statement: ClauseElement
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Many:
    """In a write unit: a statement built once, run for each of `rows` in one driver call
    (as `execute_many`); the unit is sent None."""

    statement: ClauseElement
    rows: Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class AllRows:
    """In a write unit: a `Bound` statement whose rows all come back (a list)."""

    bound: Bound


Statement = ClauseElement | Bound | Many | AllRows
WriteUnit = Generator[Statement, Any, T]
"""A write transaction as a generator: it yields each statement and is sent back the
statement's first row (a record, as `Database.fetch_one` returns it) or None; what it
returns is the unit's result; an exception it raises rolls back everything it wrote.
A statement's error ends the unit and is raised to the caller. The unit does no I/O of
its own: on SQLite it runs on the connection's thread."""


class Slots:
    """`column IN (:name0, ..., :nameN-1)` for statements built once: `values(items)` gives
    the parameters for up to N items (the slots left over are NULL, which matches
    nothing), and `chunks(items)` splits a longer list."""

    def __init__(self, name: str, count: int) -> None:
        self.count = count
        self._names = [f"{name}{n}" for n in range(count)]

    def in_(self, column: ColumnElement[Any]) -> ColumnElement[bool]:
        return column.in_([sa.bindparam(name, type_=column.type) for name in self._names])

    def values(self, items: Sequence[Any]) -> dict[str, Any]:
        if len(items) > self.count:
            raise ValueError(f"{len(items)} items for {self.count} slots")
        return dict(zip(self._names, [*items, *[None] * (self.count - len(items))], strict=True))

    def chunks(self, items: Sequence[Any]) -> list[Sequence[Any]]:
        return [items[start : start + self.count] for start in range(0, len(items), self.count)]


async def fetch_bound(
    db: databases.Database, statement: ClauseElement, values: Mapping[str, Any]
) -> list[Any]:
    """`db.fetch_all` of a statement built once (module level) with `sa.bindparam(name)`
    placeholders, given this call's values by name. It skips building the statement and
    computing its cache key, which cost more than running a short one."""
    return await db.fetch_all(Bound(statement, values))  # type: ignore[arg-type]


def _prepare(
    cache: _CompileCache, dialect: Dialect, query: ClauseElement | Bound
) -> tuple[_Prepared, list[Any]] | None:
    if isinstance(query, Bound):
        prepared, [args] = cache.prepare_bound(dialect, query.statement, [query.values])
        return prepared, args
    return cache.prepare(dialect, query)


def _qmark(compiled: Compiled) -> tuple[str, list[str]]:
    return compiled.string, list(compiled.positiontup or [])  # type: ignore[attr-defined]


def _dollar(compiled: Compiled) -> tuple[str, list[str]]:
    keys = sorted(compiled.params)
    mapping = {key: f"${i}" for i, key in enumerate(keys, start=1)}
    return compiled.string % mapping, keys


class _PooledSQLitePool(SQLitePool):
    """Keeps up to `SQLITE_POOL_SIZE` idle connections instead of one thread per task."""

    def __init__(self, url: DatabaseURL, **options: Any) -> None:
        super().__init__(url, **options)
        self._idle: list[aiosqlite.Connection] = []
        self._closed = False
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
        if self._closed or connection.in_transaction or len(self._idle) >= SQLITE_POOL_SIZE:
            await connection.__aexit__(None, None, None)
            return
        self._idle.append(connection)

    def reopen(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.__aexit__(None, None, None)


def _begin_immediate(raw: sqlite3.Connection) -> None:
    """On the connection's thread: BEGIN IMMEDIATE, tried every `SQLITE_BUSY_POLL_S`
    while another process writes, for up to the busy timeout. SQLite's own busy handler
    sleeps 1, 2, 5, 10 ms... between tries: behind a steady writer in another process (the
    poller) a transaction waited about 4 ms for a lock held for less than 1 ms."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    raw.execute("PRAGMA busy_timeout=0").close()
    try:
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE").close()
                return
            except sqlite3.OperationalError as exc:
                # An extended code (SQLITE_BUSY_RECOVERY, say) is busy all the same.
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(SQLITE_BUSY_POLL_S)
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}").close()


def _hop(connection: aiosqlite.Connection) -> Callable[..., Awaitable[Any]]:
    """aiosqlite's own way to run a function on the connection's thread: one hop."""
    run: Callable[..., Awaitable[Any]] = connection._execute
    return run


def _run(
    raw: sqlite3.Connection, dialect: Dialect, compiled: Any, *, rows: bool, many: bool
) -> Any:
    """On the connection's thread: execute a compiled statement (`_compile`'s result) and
    read its result, as `databases` does in three hops: records (all of them if `many`,
    else the first or None) if `rows`, else the last row id or the row count."""
    sql, args, result_columns, context = compiled
    cursor = raw.execute(sql, args)
    try:
        if not rows:
            return cursor.rowcount if cursor.lastrowid == 0 else cursor.lastrowid
        fetched = cursor.fetchall() if many else [cursor.fetchone()]
        fetched = [row for row in fetched if row is not None]
        if not fetched:
            return [] if many else None
        metadata = CursorResultMetaData(context, cursor.description)
        keymap: Any = metadata._keymap
        column_maps = create_column_maps(result_columns)
        records = [
            Record(
                Row(metadata, metadata._processors, keymap, row),
                result_columns,
                dialect,
                column_maps,
            )
            for row in fetched
        ]
        return records if many else records[0]
    finally:
        cursor.close()


class _ImmediateTransaction(_SQLiteTransaction):
    """`BEGIN IMMEDIATE`, taken after the process's write lock: writers of one process
    queue in asyncio instead of in SQLite's busy handler, which sleeps (up to 100 ms a
    time) while another connection writes. Other processes still meet the busy timeout."""

    def __init__(self, connection: _ImmediateConnection) -> None:
        super().__init__(connection)
        self._write_lock = connection.write_lock

    async def start(self, is_root: bool, extra_options: dict[Any, Any]) -> None:
        if not is_root:
            await super().start(is_root, extra_options)
            return
        self._is_root = True
        raw = self._connection._connection
        assert raw is not None, "Connection is not acquired"
        await self._write_lock.acquire()
        try:
            await _hop(raw)(_begin_immediate, raw._conn)
        except BaseException:
            self._write_lock.release()
            raise

    async def commit(self) -> None:
        await self._end(self._finish("COMMIT") if self._is_root else super().commit())

    async def rollback(self) -> None:
        await self._end(self._finish("ROLLBACK") if self._is_root else super().rollback())

    async def _finish(self, sql: str) -> None:
        raw = self._connection._connection
        assert raw is not None, "Connection is not acquired"
        await _hop(raw)(lambda: raw._conn.execute(sql).close())

    async def _end(self, ending: Awaitable[None]) -> None:
        try:
            await ending
        finally:
            if self._is_root:
                self._write_lock.release()


class _ImmediateConnection(SQLiteConnection):
    _cache = _CompileCache(_qmark)

    def __init__(self, pool: SQLitePool, dialect: Dialect, write_lock: asyncio.Lock) -> None:
        super().__init__(pool, dialect)
        self.write_lock = write_lock

    def transaction(self) -> _ImmediateTransaction:
        return _ImmediateTransaction(self)

    async def fetch_all(self, query: ClauseElement) -> list[Any]:
        records: list[Any] = await self._in_one_hop(query, rows=True, many=True)
        return records

    async def fetch_one(self, query: ClauseElement) -> Any:
        return await self._in_one_hop(query, rows=True, many=False)

    async def execute(self, query: ClauseElement) -> Any:
        return await self._in_one_hop(query, rows=False, many=False)

    async def _in_one_hop(self, query: ClauseElement, *, rows: bool, many: bool) -> Any:
        raw = self._connection
        assert raw is not None, "Connection is not acquired"
        compiled = self._compile(query)
        return await _hop(raw)(_run, raw._conn, self._dialect, compiled, rows=rows, many=many)

    def _compile(self, query: ClauseElement | Bound) -> Any:
        hit = _prepare(self._cache, self._dialect, query)
        if hit is None:
            assert not isinstance(query, Bound), "a bound statement is always cached"
            return super()._compile(query)
        prepared, args = hit
        compiled: Any = prepared.compiled
        context: Any = self._dialect.execution_ctx_cls()
        context.dialect = self._dialect
        context.result_column_struct = (
            compiled._result_columns,
            compiled._ordered_columns,
            compiled._textual_ordered_columns,
            compiled._ad_hoc_textual,
            compiled._loose_column_name_matching,
        )
        return prepared.sql, args, compiled._result_columns, CompilationContext(context)


class _CachingPostgresConnection(PostgresConnection):
    _cache = _CompileCache(_dollar)

    def _compile(self, query: ClauseElement | Bound) -> Any:
        hit = _prepare(self._cache, self._dialect, query)
        if hit is None:
            assert not isinstance(query, Bound), "a bound statement is always cached"
            return super()._compile(query)
        prepared, args = hit
        compiled: Any = prepared.compiled
        return prepared.sql, args, compiled._result_columns


class CachingPostgresBackend(PostgresBackend):
    def connection(self) -> _CachingPostgresConnection:
        return _CachingPostgresConnection(self, self._dialect)


class ImmediateSQLiteBackend(SQLiteBackend):
    """SQLite backend with pooled WAL connections, `BEGIN IMMEDIATE` transactions and
    group commit of write units."""

    def __init__(self, database_url: DatabaseURL | str, **options: Any) -> None:
        super().__init__(database_url, **options)
        self._pool = _PooledSQLitePool(self._database_url, **self._options)
        self._write_lock = asyncio.Lock()
        self.group_commit = _GroupCommit(self._pool, self.connection())

    async def connect(self) -> None:
        assert isinstance(self._pool, _PooledSQLitePool)
        self._pool.reopen()

    async def disconnect(self) -> None:
        await super().disconnect()
        assert isinstance(self._pool, _PooledSQLitePool)
        await self._pool.close()

    def connection(self) -> _ImmediateConnection:
        return _ImmediateConnection(self._pool, self._dialect, self._write_lock)


@dataclass
class _Queued:
    unit: WriteUnit[Any]
    one_write: bool
    future: asyncio.Future[Any]
    outcome: tuple[bool, Any] = field(default=(False, None))  # (failed, value or error)


class _GroupCommit:
    """Runs the write units of one process's callers in batches, each batch in one
    transaction and one hop to a pooled connection's thread, under the process's write
    lock. A batch is whatever queued while the previous one ran (at most
    `GROUP_COMMIT_MAX_UNITS`): a lone caller waits for nobody. Each unit runs in a
    savepoint, so one that fails leaves nothing behind and the others commit."""

    def __init__(self, pool: _PooledSQLitePool, compiler: _ImmediateConnection) -> None:
        self._pool = pool
        self._compiler = compiler
        self._queue: list[_Queued] = []
        self._runner: asyncio.Task[None] | None = None

    async def run(self, unit: WriteUnit[T], *, one_write: bool) -> T:
        queued = _Queued(unit, one_write, asyncio.get_running_loop().create_future())
        self._queue.append(queued)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain())
        result: T = await queued.future
        return result

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[:GROUP_COMMIT_MAX_UNITS]
            del self._queue[:GROUP_COMMIT_MAX_UNITS]
            try:
                await self._commit(batch)
            except BaseException as exc:
                for queued in batch:
                    if not queued.future.done():
                        queued.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):  # the loop is closing
                    for queued in self._queue:
                        queued.future.cancel()
                    raise
                continue
            for queued in batch:
                failed, value = queued.outcome
                if queued.future.done():
                    continue
                if failed:
                    queued.future.set_exception(value)
                else:
                    queued.future.set_result(value)

    async def _commit(self, batch: list[_Queued]) -> None:
        async with self._compiler.write_lock:
            # A caller cancelled until now (its client went away) writes nothing.
            batch = [queued for queued in batch if not queued.future.done()]
            if not batch:
                return
            connection = await self._pool.acquire()
            try:
                await _hop(connection)(_run_batch, connection._conn, self._compiler, batch)
            finally:
                await self._pool.release(connection)


def _run_batch(
    raw: sqlite3.Connection, compiler: _ImmediateConnection, batch: list[_Queued]
) -> None:
    """On the connection's thread: BEGIN IMMEDIATE, each unit in a savepoint, COMMIT.
    A unit's exception is its outcome; any other error (busy, disk) fails the batch,
    rolled back whole."""

    def fetch_one(query: Statement) -> Any:
        if isinstance(query, Many):
            if query.rows:
                sql, args = compiler._cache.prepare_bound(
                    compiler._dialect, query.statement, query.rows
                )
                raw.executemany(sql.sql, args).close()
            return None
        if isinstance(query, AllRows):
            compiled = compiler._compile(query.bound)
            return _run(raw, compiler._dialect, compiled, rows=True, many=True)
        compiled = compiler._compile(query)
        return _run(raw, compiler._dialect, compiled, rows=True, many=False)

    _begin_immediate(raw)
    try:
        for queued in batch:
            raw.execute("SAVEPOINT unit").close()
            try:
                value = _drive(queued.unit, fetch_one, one_write=queued.one_write)
                queued.outcome = (False, value)
            except Exception as exc:
                raw.execute("ROLLBACK TO unit").close()
                queued.outcome = (True, exc)
            raw.execute("RELEASE unit").close()
        raw.execute("COMMIT").close()
    except BaseException:
        if raw.in_transaction:
            raw.execute("ROLLBACK").close()
        raise


def _drive(unit: WriteUnit[T], fetch_one: Callable[[Statement], Any], *, one_write: bool) -> T:
    value: Any = None
    wrote = False
    while True:
        try:
            statement = unit.send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result
        wrote = _one_write_check(statement, wrote=wrote, one_write=one_write)
        try:
            value = fetch_one(statement)
        except BaseException:
            unit.close()
            raise


async def _drive_async(db: databases.Database, unit: WriteUnit[T], *, one_write: bool) -> T:
    """`_drive`, with the statements run through `databases` on the event loop."""
    value: Any = None
    wrote = False
    while True:
        try:
            statement = unit.send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result
        wrote = _one_write_check(statement, wrote=wrote, one_write=one_write)
        try:
            value = await fetch_one(db, statement)
        except BaseException:
            unit.close()
            raise


def _one_write_check(statement: Statement, *, wrote: bool, one_write: bool) -> bool:
    """Whether a `one_write` unit has written once `statement` runs; raises if it is a
    statement after the write."""
    if not one_write:
        return False
    if wrote:
        raise RuntimeError("a one_write unit ran a statement after its write")
    if isinstance(statement, AllRows):
        statement = statement.bound
    query = statement.statement if isinstance(statement, Bound | Many) else statement
    return not isinstance(query, Select)


async def fetch_one(db: databases.Database, statement: Statement) -> Any:
    """`db.fetch_one` that also takes a `Bound` statement (and runs a `Many`)."""
    if isinstance(statement, Many):
        await execute_many(db, statement.statement, statement.rows)
        return None
    if isinstance(statement, AllRows):
        return await db.fetch_all(statement.bound)  # type: ignore[arg-type]
    # `databases` hands the statement as it is to our connections' `_compile`.
    return await db.fetch_one(statement)  # type: ignore[arg-type]


def _in_transaction(db: databases.Database) -> bool:
    connection = db._global_connection or db._connection
    return connection is not None and bool(connection._transaction_stack)


async def run_unit(db: databases.Database, unit: WriteUnit[T], *, one_write: bool = False) -> T:
    """Run `unit` in a transaction: all it wrote is committed when this returns, and
    nothing of it if this raises (its own exception, or the database's). On SQLite
    concurrent units share a transaction (group commit), each in a savepoint; inside an
    open `db.transaction()` the unit joins it instead.

    `one_write`: the unit reads, then writes with one statement, its last (a statement
    after it raises `RuntimeError`). On PostgreSQL it then runs without BEGIN and
    COMMIT, two round trips fewer: one statement is atomic by itself, and its reads see
    committed data anyway (READ COMMITTED), so the write must re-check what it relies on
    (a WHERE guard)."""
    backend = db._backend
    if isinstance(backend, ImmediateSQLiteBackend) and not _in_transaction(db):
        return await backend.group_commit.run(unit, one_write=one_write)
    async with db.connection():
        if one_write and not _in_transaction(db):
            return await _drive_async(db, unit, one_write=True)
        async with db.transaction():
            return await _drive_async(db, unit, one_write=one_write)


class _Database(databases.Database):
    SUPPORTED_BACKENDS = {
        **databases.Database.SUPPORTED_BACKENDS,
        "sqlite": "core.database:ImmediateSQLiteBackend",
        "postgresql": "core.database:CachingPostgresBackend",
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


async def execute_many(
    db: databases.Database, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Run `statement` once per row in ONE driver call: one thread hop on SQLite, one
    pipelined batch on PostgreSQL (`databases` runs and compiles a statement per row).

    `statement` is built once (it is cached as the object, as for `bind`) and names its
    values with `sa.bindparam(name)`; each row maps those names to values. No rows come
    back. Run it inside `db.transaction()` when the rows must be
    written together.
    """
    if not rows:
        return
    async with db.connection() as connection:
        backend: Any = connection._connection
        prepared, arguments = backend._cache.prepare_bound(backend._dialect, statement, rows)
        await connection.raw_connection.executemany(prepared.sql, arguments)
