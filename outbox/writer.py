"""Writing an event to the outbox together with the change that caused it.

`write_with_event(db, change, values, event)` is the outbox's entry: the change and its
event are committed together, or neither is. The outbox decides how: on PostgreSQL in
one statement (no BEGIN and COMMIT round trips), elsewhere as a write unit.
`add_event` writes an event inside a `db.transaction()` the caller holds open.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.database import (
    Database,
    Query,
    WriteUnit,
    execute_in_open_transaction,
    fetch_one,
    run_in_transaction,
)
from core.tables import outbox

_COLUMNS = ("event_id", "client_id", "event_type", "content", "created_at", "traceparent")
# Bind names that cannot clash with those of a statement the event is written with.
_BINDS: dict[str, sa.BindParameter[Any]] = {
    column: sa.bindparam(f"new_event_{column}", type_=outbox.c[column].type) for column in _COLUMNS
}
_INSERT_EVENT = outbox.insert().values(_BINDS)


def event_params(
    *,
    client_id: str,
    event_type: str,
    content: dict[str, Any],
    event_id: str | None = None,
    traceparent: str | None = None,
) -> dict[str, Any]:
    """The values of a new event (a fresh id unless `event_id`) for `event_insert`,
    `insert_event_if` or `write_with_event`. `traceparent`: the W3C trace context of the
    request that caused it, which its deliveries carry (SPEC 17)."""
    values = {
        "event_id": event_id or str(uuid.uuid4()),
        "client_id": client_id,
        "event_type": event_type,
        "content": content,
        "created_at": utcnow(),
        "traceparent": traceparent,
    }
    return {_BINDS[column].key: value for column, value in values.items()}


def event_insert(params: dict[str, Any]) -> Query:
    """The INSERT of a new event (`event_params`): run it in the same transaction as the
    change that caused it, e.g. from a `WriteUnit`."""
    return Query(_INSERT_EVENT, params)


@lru_cache(maxsize=64)
def insert_event_if(change: sa.Update | sa.Insert) -> sa.Insert:
    """PostgreSQL: one statement that makes `change` (an UPDATE or INSERT ... RETURNING)
    and inserts an event (values from `event_params`) if and only if it changed a row, so
    both are committed or neither is. It returns the event's `seq`, or no row. (Built
    once per change statement.)"""
    done = change.cte("change")
    # In a SELECT list the parameters have no type of their own: the casts give them.
    values = sa.select(*(sa.cast(_BINDS[c], outbox.c[c].type) for c in _COLUMNS)).select_from(done)
    return outbox.insert().from_select(_COLUMNS, values).returning(outbox.c.seq).add_cte(done)


async def write_with_event(
    db: Database,
    change: sa.Update | sa.Insert,
    values: Mapping[str, Any],
    event: Mapping[str, Any],
) -> bool:
    """Make `change` (an INSERT or UPDATE ... RETURNING, built once with bind parameters
    given by `values`) and add `event` (`event_params`) to the outbox if and only if the
    change returned a row, atomically. Returns whether it did."""
    if db.url.dialect == "postgresql":
        return await fetch_one(db, insert_event_if(change), {**values, **event}) is not None
    return await run_in_transaction(db, _change_then_event(change, values, event))


def _change_then_event(
    change: sa.Update | sa.Insert, values: Mapping[str, Any], event: Mapping[str, Any]
) -> WriteUnit[bool]:
    if not (yield Query(change, values)):
        return False
    yield Query(_INSERT_EVENT, event)
    return True


async def add_event(
    db: Database, *, client_id: str, event_type: str, content: dict[str, Any]
) -> str:
    """Insert the event; call it inside `db.transaction()` together with the change that
    caused it, so that both are committed or neither is. Returns the event id."""
    event_id = str(uuid.uuid4())
    params = event_params(
        client_id=client_id, event_type=event_type, content=content, event_id=event_id
    )
    await execute_in_open_transaction(db, event_insert(params))
    return event_id
