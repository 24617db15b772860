"""An outbox row: the values of a new event and its INSERT, for any write unit that
commits an event with the change that caused it (the outbox writer, the operational
events of the delivery lifecycle and of configurations)."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.database import Query
from core.tables import outbox

COLUMNS = (
    "event_id",
    "client_id",
    "event_type",
    "content",
    "created_at",
    "source_config_id",
    "traceparent",
)
# Bind names that cannot clash with those of a statement the event is written with.
EVENT_BINDS: dict[str, sa.BindParameter[Any]] = {
    column: sa.bindparam(f"new_event_{column}", type_=outbox.c[column].type) for column in COLUMNS
}
INSERT_EVENT = outbox.insert().values(EVENT_BINDS)


def event_params(
    *,
    client_id: str,
    event_type: str,
    content: dict[str, Any],
    event_id: str | None = None,
    source_config_id: str | None = None,
    traceparent: str | None = None,
) -> dict[str, Any]:
    """The values of a new event (a fresh id unless `event_id`) for `event_insert` or the
    outbox writer. `source_config_id`: the configuration an operational event is about,
    which the fan-out never sends it to. `traceparent`: the W3C trace context of the
    request that caused it, which its deliveries carry (SPEC 17)."""
    values = {
        "event_id": event_id or str(uuid.uuid4()),
        "client_id": client_id,
        "event_type": event_type,
        "content": content,
        "created_at": utcnow(),
        "source_config_id": source_config_id,
        "traceparent": traceparent,
    }
    return {EVENT_BINDS[column].key: value for column, value in values.items()}


def event_insert(params: dict[str, Any]) -> Query:
    """The INSERT of a new event (`event_params`): run it in the same transaction as the
    change that caused it, e.g. from a `WriteUnit`."""
    return Query(INSERT_EVENT, params)
