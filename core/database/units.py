"""The contract of a write unit: a short write transaction written as a generator.

A unit yields each `Query` it runs and is sent back the rows the statement returned
(a list, empty for a statement that returns none, and for `Query.for_each`); what it
returns is the unit's result. It runs in a transaction of its own: everything it wrote
is committed when `run_in_transaction` returns, and nothing if it raises. An exception
the unit raises rolls back what it wrote; a statement's error ends the unit and is
raised to the caller.

    def renaming(client_id: str, name: str) -> WriteUnit[bool]:
        rows = yield Query(SELECT_CLIENT, {"id": client_id})
        if not rows:
            return False
        yield Query(RENAME_CLIENT, {"id": client_id, "name": name})
        return True

A unit does no I/O of its own and never awaits: on SQLite it runs on the writer's
thread, in one transaction with the units of the process's other callers (group
commit); on PostgreSQL its statements run on a pooled connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import TypeVar

from core.database.statements import Query, Row

T = TypeVar("T")

WriteUnit = Generator[Query, list[Row], T]


def drive(unit: WriteUnit[T], execute: Callable[[Query], list[Row]]) -> T:
    """Run `unit` to its end, each statement through `execute`."""
    rows: list[Row] | None = None
    while True:
        try:
            query = unit.send(rows)  # type: ignore[arg-type]  # None starts it
        except StopIteration as stop:
            result: T = stop.value
            return result
        try:
            rows = execute(query)
        except BaseException:
            unit.close()
            raise


async def drive_async(unit: WriteUnit[T], execute: Callable[[Query], Awaitable[list[Row]]]) -> T:
    """`drive`, with statements run by an asynchronous driver."""
    rows: list[Row] | None = None
    while True:
        try:
            query = unit.send(rows)  # type: ignore[arg-type]  # None starts it
        except StopIteration as stop:
            result: T = stop.value
            return result
        try:
            rows = await execute(query)
        except BaseException:
            unit.close()
            raise


def single(query: Query) -> WriteUnit[list[Row]]:
    """The unit of one statement: its rows."""
    rows = yield query
    return rows
