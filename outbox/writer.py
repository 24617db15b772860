"""Writing an event to the outbox, inside the caller's transaction."""

from __future__ import annotations

import uuid
from typing import Any

from core.clock import utcnow
from core.database import Database
from core.tables import outbox


async def add_event(
    db: Database, *, client_id: str, event_type: str, content: dict[str, Any]
) -> str:
    """Insert the event; call it inside `db.transaction()` together with the change that
    caused it, so that both are committed or neither is. Returns the event id."""
    event_id = str(uuid.uuid4())
    await db.execute(
        outbox.insert().values(
            event_id=event_id,
            client_id=client_id,
            event_type=event_type,
            content=content,
            created_at=utcnow(),
        )
    )
    return event_id
