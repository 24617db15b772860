"""SQLite's group commit: one connection, on a thread of its own, runs every write
unit of the process.

SQLite lets one writer at a time hold the file, and each trip from the event loop to a
connection's thread costs a loop iteration. So the writer takes the units that queued
while it was busy (up to `GROUP_COMMIT_MAX_UNITS`) and runs them in ONE transaction:
BEGIN IMMEDIATE, each unit in a savepoint of its own, COMMIT, then one call back to
each caller's event loop. A lone caller waits for nobody.

- A unit that raises is rolled back to its savepoint: it leaves nothing behind, and
  the other units of its batch commit.
- An error of the batch itself (the lock not had within the busy timeout, a full
  disk) rolls the whole batch back and is raised to each of its callers.
- A caller cancelled before its unit runs (its client went away) writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.engine import Dialect

from core.database.sqlite_connections import begin_immediate, connect, execute
from core.database.statements import StatementCache
from core.database.units import WriteUnit, drive

GROUP_COMMIT_MAX_UNITS = 64
T = TypeVar("T")


@dataclass
class _Job:
    """A unit, the future its caller awaits, and, once run, its outcome."""

    unit: WriteUnit[Any]
    future: asyncio.Future[Any]
    failure: BaseException | None = None
    result: Any = None
    # Set on the caller's loop, read on the writer's thread: a plain flag, not the future.
    cancelled: bool = field(default=False)

    def __post_init__(self) -> None:
        self.future.add_done_callback(self._note_cancelled)

    def _note_cancelled(self, future: asyncio.Future[Any]) -> None:
        self.cancelled = future.cancelled()


class SqliteWriter:
    """The writer thread of one SQLite file (see the module docstring)."""

    def __init__(self, path: str, dialect: Dialect) -> None:
        self.path = path
        self.dialect = dialect
        self._jobs: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # The jobs of this loop iteration, handed over together when it ends.
        self._arriving: list[_Job] = []
        # On the writer's thread: the jobs past a full batch, and whether `stop` came.
        self._left_over: list[_Job] = []
        self._stopping = False

    def start(self) -> None:
        """Start the thread; it opens its connection for its first batch (and again
        after a batch that found the file unavailable)."""
        self._thread = threading.Thread(target=self._serve, name="sqlite-writer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Run the units queued so far, then close the connection and end the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            if self._arriving:
                self._hand_over()
            self._jobs.put(None)
            await asyncio.to_thread(thread.join)

    async def run(self, unit: WriteUnit[T]) -> T:
        """Run `unit` in the next batch; its result, or what it raised."""
        if self._thread is None:
            unit.close()
            raise RuntimeError("the database is not connected")
        loop = asyncio.get_running_loop()
        job = _Job(unit, loop.create_future())
        if not self._arriving:
            loop.call_soon(self._hand_over)
        self._arriving.append(job)
        result: T = await job.future
        return result

    def _hand_over(self) -> None:
        jobs, self._arriving = self._arriving, []
        self._jobs.put(jobs)

    def _serve(self) -> None:
        connection: sqlite3.Connection | None = None
        statements = StatementCache(self.dialect)
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._next_batch()
                if not batch:
                    continue
                try:
                    connection = connection or connect(self.path)
                except Exception as exc:
                    for job in batch:
                        job.failure = exc
                else:
                    _commit(connection, statements, batch)
                _report(batch)
        finally:
            if connection is not None:
                connection.close()

    def _next_batch(self) -> tuple[list[_Job], bool]:
        """The jobs handed over by now (waiting for some), at most
        `GROUP_COMMIT_MAX_UNITS`, and whether `stop` came after them."""
        batch = self._left_over
        jobs = [] if batch or self._stopping else self._jobs.get()
        while jobs is not None:
            batch = batch + jobs
            if len(batch) >= GROUP_COMMIT_MAX_UNITS:
                break
            try:
                jobs = self._jobs.get_nowait()
            except queue.Empty:
                break
        self._stopping = self._stopping or jobs is None
        self._left_over = batch[GROUP_COMMIT_MAX_UNITS:]
        return batch[:GROUP_COMMIT_MAX_UNITS], self._stopping and not self._left_over


def _commit(connection: sqlite3.Connection, statements: StatementCache, batch: list[_Job]) -> None:
    """BEGIN IMMEDIATE, each unit in a savepoint, COMMIT; on the writer's thread."""
    try:
        begin_immediate(connection)
        for job in batch:
            if not job.cancelled:
                _run_in_savepoint(connection, statements, job)
        connection.execute("COMMIT").close()
    except BaseException as exc:
        if connection.in_transaction:
            connection.execute("ROLLBACK").close()
        for job in batch:
            job.failure = exc
        if not isinstance(exc, Exception):
            raise


def _run_in_savepoint(
    connection: sqlite3.Connection, statements: StatementCache, job: _Job
) -> None:
    connection.execute("SAVEPOINT unit").close()
    try:
        job.result = drive(job.unit, partial(execute, connection, statements))
    except Exception as exc:
        connection.execute("ROLLBACK TO unit").close()
        job.failure = exc
    connection.execute("RELEASE unit").close()


def _report(batch: list[_Job]) -> None:
    """Settle the batch's futures: one call to each callers' event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = defaultdict(list)
    for job in batch:
        by_loop[job.future.get_loop()].append(job)
    for loop, jobs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, jobs)


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():
            continue
        if job.failure is not None:
            job.future.set_exception(job.failure)
        else:
            job.future.set_result(job.result)
