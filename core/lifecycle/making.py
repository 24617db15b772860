"""Making delivery rows: one per (event, configuration), `pending` and due now while
the configuration is enabled, `held` while it is disabled."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core.database import Database, Query, WriteUnit, run_in_transaction
from core.lifecycle.status import Status
from core.tables import deliveries

DELIVERY_COLUMNS = (
    "id",
    "config_id",
    "client_id",
    "event_id",
    "event_type",
    "body",
    "status",
    "attempt_count",
    "created_at",
    "next_attempt_at",
    "seq",
    "traceparent",
)


def delivery_row(
    *,
    config_id: str,
    client_id: str,
    event_id: str,
    event_type: str,
    body: str,
    enabled: bool,
    now: datetime,
    seq: int | None,
    traceparent: str | None = None,
) -> dict[str, Any]:
    """A new delivery (a fresh id) of `body` to the configuration; `seq` orders it among
    the configuration's deliveries (its event's outbox seq); `traceparent`, its event's
    trace context, is the parent of each attempt's span (SPEC 17)."""
    return {
        "id": str(uuid.uuid4()),
        "config_id": config_id,
        "client_id": client_id,
        "event_id": event_id,
        "event_type": event_type,
        "body": body,
        "status": Status.PENDING if enabled else Status.HELD,
        "attempt_count": 0,
        "created_at": now,
        "next_attempt_at": now if enabled else None,
        "seq": seq,
        "traceparent": traceparent,
    }


def _insert_statement(dialect: str) -> sa.Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(deliveries)
        .values({name: sa.bindparam(name) for name in DELIVERY_COLUMNS})
        .on_conflict_do_nothing(index_elements=["event_id", "config_id"])
    )


_INSERT = {dialect: _insert_statement(dialect) for dialect in ("postgresql", "sqlite")}


def deliveries_insert(db: Database, rows: Sequence[dict[str, Any]]) -> Query:
    """For a write unit: the INSERT of `delivery_row`s in one statement batch; a row
    whose (event, configuration) pair exists already is skipped."""
    return Query.for_each(_INSERT[db.url.dialect], rows)


async def insert_deliveries(db: Database, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `delivery_row`s (see `deliveries_insert`) in a transaction of their own."""
    await run_in_transaction(db, _inserting(deliveries_insert(db, rows)))


def _inserting(insert: Query) -> WriteUnit[None]:
    yield insert
