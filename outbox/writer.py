"""Writing an event to the outbox, inside the caller's transaction."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.database import Database
from core.tables import outbox


def event_insert(
    *, client_id: str, event_type: str, content: dict[str, Any], event_id: str | None = None
) -> sa.Insert:
    """The INSERT of a new event (a fresh id unless `event_id`): run it in the same
    transaction as the change that caused it, e.g. from a `WriteUnit`."""
    return outbox.insert().values(
        event_id=event_id or str(uuid.uuid4()),
        client_id=client_id,
        event_type=event_type,
        content=content,
        created_at=utcnow(),
    )


async def add_event(
    db: Database, *, client_id: str, event_type: str, content: dict[str, Any]
) -> str:
    """Insert the event; call it inside `db.transaction()` together with the change that
    caused it, so that both are committed or neither is. Returns the event id."""
    event_id = str(uuid.uuid4())
    await db.execute(
        event_insert(client_id=client_id, event_type=event_type, content=content, event_id=event_id)
    )
    return event_id
