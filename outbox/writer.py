"""Writing an event to the outbox, inside the caller's transaction."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.database import Bound, Database, fetch_one
from core.tables import outbox

_COLUMNS = ("event_id", "client_id", "event_type", "content", "created_at")
# Bind names that cannot clash with those of a statement the event is written with.
_BINDS: dict[str, sa.BindParameter[Any]] = {
    column: sa.bindparam(f"new_event_{column}", type_=outbox.c[column].type) for column in _COLUMNS
}
_INSERT_EVENT = outbox.insert().values(_BINDS)


def event_params(
    *, client_id: str, event_type: str, content: dict[str, Any], event_id: str | None = None
) -> dict[str, Any]:
    """The values of a new event (a fresh id unless `event_id`) for `event_insert`'s or
    `insert_event_if`'s statement."""
    values = {
        "event_id": event_id or str(uuid.uuid4()),
        "client_id": client_id,
        "event_type": event_type,
        "content": content,
        "created_at": utcnow(),
    }
    return {_BINDS[column].key: value for column, value in values.items()}


def event_insert(params: dict[str, Any]) -> Bound:
    """The INSERT of a new event (`event_params`): run it in the same transaction as the
    change that caused it, e.g. from a `WriteUnit`."""
    return Bound(_INSERT_EVENT, params)


def insert_event_if(change: sa.Update | sa.Insert) -> sa.Insert:
    """PostgreSQL: one statement that makes `change` (an UPDATE or INSERT ... RETURNING)
    and inserts an event (values from `event_params`) if and only if it changed a row, so
    both are committed or neither is. It returns the event's `seq`, or no row."""
    done = change.cte("change")
    # In a SELECT list the parameters have no type of their own: the casts give them.
    values = sa.select(*(sa.cast(_BINDS[c], outbox.c[c].type) for c in _COLUMNS)).select_from(done)
    return outbox.insert().from_select(_COLUMNS, values).returning(outbox.c.seq).add_cte(done)


async def add_event(
    db: Database, *, client_id: str, event_type: str, content: dict[str, Any]
) -> str:
    """Insert the event; call it inside `db.transaction()` together with the change that
    caused it, so that both are committed or neither is. Returns the event id."""
    event_id = str(uuid.uuid4())
    params = event_params(
        client_id=client_id, event_type=event_type, content=content, event_id=event_id
    )
    await fetch_one(db, event_insert(params))
    return event_id
