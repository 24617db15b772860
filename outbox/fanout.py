"""Claiming outbox rows and fanning each event out into one delivery per subscribed
configuration of the same client, in one transaction.

Many pollers may run at once: PostgreSQL hands each one different rows
(`FOR UPDATE SKIP LOCKED`); SQLite serialises them (`BEGIN IMMEDIATE`). The unique
(event, configuration) constraint makes a repeated fan-out a no-op all the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.controls import body_for, passes
from core.database import (
    Database,
    FixedInList,
    Query,
    Row,
    WriteUnit,
    run_in_transaction,
)
from core.lifecycle import Status, deliveries_insert, delivery_row
from core.tables import outbox, webhook_configs
from core.tracing import links, tracer

FANOUT_SPAN = "outbox fan-out"


@dataclass(frozen=True)
class Fanout:
    events: int
    pending_ids: list[str]
    held: int
    # Each event's `traceparent`, for the batch's span.
    traceparents: list[str | None] = field(default_factory=list)


# FOR UPDATE SKIP LOCKED is PostgreSQL's (SQLAlchemy renders none for SQLite, whose
# write transactions are serial).
_CLAIM = (
    sa.select(
        outbox.c.seq,
        outbox.c.event_id,
        outbox.c.client_id,
        outbox.c.event_type,
        outbox.c.content,
        outbox.c.source_config_id,
        outbox.c.traceparent,
    )
    .where(outbox.c.dispatched_at.is_(None))
    .order_by(outbox.c.seq)
    .limit(sa.bindparam("batch_size", type_=sa.Integer))
    .with_for_update(skip_locked=True)
)

_CLIENTS = FixedInList("client", 16)
# On PostgreSQL, a re-enable that commits during the fan-out would miss the held rows
# it inserts: the configurations are read under a share lock. Rows are locked in
# (client, id) order, as the workers' records lock them (the chunks go in client order).
_SUBSCRIBERS = (
    sa.select(
        webhook_configs.c.id,
        webhook_configs.c.client_id,
        webhook_configs.c.subscribed_events,
        webhook_configs.c.enabled,
        webhook_configs.c.filter,
        webhook_configs.c.payload,
    )
    .where(_CLIENTS.in_(webhook_configs.c.client_id), webhook_configs.c.deleted_at.is_(None))
    .order_by(webhook_configs.c.client_id, webhook_configs.c.id)
    .with_for_update(read=True)
)


def _subscribers(client_ids: set[str]) -> WriteUnit[dict[str, list[Row]]]:
    by_client: dict[str, list[Row]] = {}
    for chunk in _CLIENTS.chunks(sorted(client_ids)):
        for row in (yield Query(_SUBSCRIBERS, _CLIENTS.values(chunk))):
            by_client.setdefault(row["client_id"], []).append(row)
    return by_client


def _rows(
    events: Iterable[dict[str, Any]], subscribers: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """A delivery of each event to each configuration subscribed to its type whose
    `filter` passes it, with the body its `payload` says."""
    now = utcnow()
    rows = []
    for event in events:
        event_type, content = event["event_type"], event["content"]
        for config in subscribers.get(event["client_id"], []):
            # An operational event is never sent to the configuration it is about.
            if (
                event_type in config["subscribed_events"]
                and config["id"] != event["source_config_id"]
                and passes(config["filter"], event_type, content)
            ):
                rows.append(
                    delivery_row(
                        config_id=config["id"],
                        client_id=event["client_id"],
                        event_id=event["event_id"],
                        event_type=event_type,
                        body=body_for(event_type, content, config["payload"]),
                        enabled=config["enabled"],
                        now=now,
                        seq=event["seq"],
                        traceparent=event["traceparent"],
                    )
                )
    return rows


_MARK_DISPATCHED = (
    outbox.update()
    .where(outbox.c.seq == sa.bindparam("seq"))
    .values(dispatched_at=sa.bindparam("dispatched_at"))
)


async def fan_out_batch(db: Database, *, batch_size: int) -> Fanout:
    """Claim up to `batch_size` undispatched events, create their deliveries and mark
    them dispatched, all in one transaction. The caller enqueues `pending_ids` after.

    A pair that was fanned out before keeps its delivery, and the id this round made for
    it names no delivery: its message is a no-op (it cannot happen while events are
    claimed and marked in one transaction; the unique constraint is the safety net)."""
    started_ns = time.time_ns()
    fanout = await run_in_transaction(db, _fanning_out(db, batch_size))
    if fanout.events:
        _trace(fanout, started_ns=started_ns)
    return fanout


def _trace(fanout: Fanout, *, started_ns: int) -> None:
    """The batch's span (an empty round has none): a root linked to each event's trace,
    since a batch holds events of many traces and belongs to none of them. The events'
    deliveries are children of their event's context, not of this span."""
    span = tracer().start_span(FANOUT_SPAN, start_time=started_ns)
    # Links and attributes only for a span that is kept: parsing costs per event.
    if span.is_recording():
        for link in links(fanout.traceparents):
            span.add_link(link.context)
        span.set_attribute("webhooks.events", fanout.events)
        span.set_attribute("webhooks.deliveries", len(fanout.pending_ids) + fanout.held)
        span.set_attribute("webhooks.held", fanout.held)
    span.end()


def _fanning_out(db: Database, batch_size: int) -> WriteUnit[Fanout]:
    events = yield Query(_CLAIM, {"batch_size": batch_size})
    if not events:
        return Fanout(0, [], 0)
    subscribers = yield from _subscribers({event["client_id"] for event in events})
    rows = _rows(events, subscribers)
    yield deliveries_insert(db, rows)
    now = utcnow()
    yield Query.for_each(
        _MARK_DISPATCHED, [{"seq": event["seq"], "dispatched_at": now} for event in events]
    )
    pending = [row["id"] for row in rows if row["status"] == Status.PENDING]
    held = sum(1 for row in rows if row["status"] == Status.HELD)
    return Fanout(len(events), pending, held, [event["traceparent"] for event in events])
