"""`ordering: "fifo"` (SPEC 13) as a rule of the database, not of any process: a
delivery of a fifo configuration can be claimed only while it is the configuration's
head, i.e. no other pending delivery of it comes first (by outbox seq, then id) and no
event of its client with a smaller seq still waits in the outbox to be fanned out (a
poller that claimed it has not committed yet). The head's lease makes it exclusive, so
at most one attempt per fifo configuration runs at once, across every worker and poller;
a worker that dies holding the head only delays the others until the lease runs out
and the sweep sends the head again.

A head waiting for its retry holds back those after it; once it is `delivered` or
`failed`, the worker that recorded it enqueues the next head (`next_in_order`). The
deliveries turned away meanwhile wait with `waiting_reason` `ordering` and no message:
the poller's sweep is the safety net should that hand-over be lost.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

import sqlalchemy as sa

from core.clock import utcnow
from core.controls import Ordering, WaitingReason
from core.database import Database, FixedInList, fetch_all, not_by_index
from core.lifecycle.status import Status
from core.tables import UTCDateTime, deliveries, outbox, webhook_configs

_AHEAD = deliveries.alias("ahead")

_IS_FIFO = (
    sa.select(webhook_configs.c.id)
    .where(
        webhook_configs.c.id == deliveries.c.config_id,
        webhook_configs.c.ordering == Ordering.FIFO,
    )
    .exists()
)
_SOMEONE_AHEAD = (
    sa.select(_AHEAD.c.id)
    .where(
        _AHEAD.c.config_id == deliveries.c.config_id,
        _AHEAD.c.status == Status.PENDING,
        sa.or_(
            _AHEAD.c.seq < deliveries.c.seq,
            sa.and_(_AHEAD.c.seq == deliveries.c.seq, _AHEAD.c.id < deliveries.c.id),
        ),
    )
    .exists()
)
_EARLIER_EVENT_UNFANNED = (
    sa.select(outbox.c.seq)
    .where(
        outbox.c.dispatched_at.is_(None),
        outbox.c.seq < deliveries.c.seq,
        outbox.c.client_id == deliveries.c.client_id,
    )
    .exists()
)
# For the WHERE of a statement on `deliveries`: the delivery may not go yet.
WAITING_IN_ORDER: sa.ColumnElement[bool] = sa.and_(
    _IS_FIFO, sa.or_(_SOMEONE_AHEAD, _EARLIER_EVENT_UNFANNED)
)

_IDS = FixedInList("id", 16)
_MARK = (
    deliveries.update()
    .where(
        _IDS.in_(deliveries.c.id),
        not_by_index(deliveries.c.status == Status.PENDING),
        not_by_index(deliveries.c.next_attempt_at <= sa.bindparam("due_by", type_=UTCDateTime)),
        WAITING_IN_ORDER,
    )
    .values(waiting_reason=WaitingReason.ORDERING)
    .returning(deliveries.c.id)
)


async def mark_waiting_in_order(
    db: Database, delivery_ids: Collection[str], *, due_by: datetime
) -> list[str]:
    """Of `delivery_ids` (ones a claim left out), those due that wait for an earlier
    delivery of their fifo configuration, marked `waiting_reason` `ordering`."""
    waiting: list[str] = []
    for chunk in _IDS.chunks(sorted(delivery_ids)):
        rows = await fetch_all(db, _MARK, _IDS.values(chunk) | {"due_by": due_by})
        waiting += [str(row["id"]) for row in rows]
    return waiting


_HEAD = (
    sa.select(deliveries.c.id)
    .where(
        deliveries.c.config_id == sa.bindparam("config_id"),
        deliveries.c.status == Status.PENDING,
    )
    .order_by(deliveries.c.seq, deliveries.c.id)
    .limit(1)
)
# A head that is due (not waiting for its retry) is made due now, when its message joins
# the queue, as the sweep's reading of the queue expects (`sweep`).
_HAND_OVER = (
    deliveries.update()
    .where(
        _IDS.in_(deliveries.c.id),
        not_by_index(deliveries.c.status == Status.PENDING),
        not_by_index(deliveries.c.next_attempt_at <= sa.bindparam("now", type_=UTCDateTime)),
    )
    .values(next_attempt_at=sa.bindparam("now", type_=UTCDateTime))
    .returning(deliveries.c.id)
)


async def next_in_order(db: Database, config_ids: Sequence[str]) -> list[str]:
    """The head of each fifo configuration named, where it is due now: to be enqueued
    after the previous head became final. (A head waiting for its retry has a message
    of its own.)"""
    heads: list[str] = []
    for config_id in sorted(set(config_ids)):
        heads += [str(row["id"]) for row in await fetch_all(db, _HEAD, {"config_id": config_id})]
    now = utcnow()
    handed_over: list[str] = []
    for chunk in _IDS.chunks(heads):
        rows = await fetch_all(db, _HAND_OVER, _IDS.values(chunk) | {"now": now})
        handed_over += [str(row["id"]) for row in rows]
    return handed_over
