"""Finding deliveries that no worker is on: due for longer than a lease with no live
lease (the worker died mid-request, or the queue message was lost to a crash or a
`FLUSHALL`). They are re-enqueued; the lease makes a duplicate message harmless.

A long queue is not a lost message. A delivery's message joins the queue when it falls
due, and the queue is taken in order, so while the workers are on deliveries that fell
due at P, one that fell due after P may simply not have been reached. Only those due
more than the grace before both now and P are stranded: during a backlog of a minute
the sweep waits for the workers instead of queueing the backlog a second time. It waits
at most `MAX_QUEUE_WAIT` longer than the grace, so that a queue that keeps falling
behind, or a position read wrong, never stops the recovery of lost messages."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from core.clock import utcnow
from core.database import Database, fetch_all, fetch_one
from core.lifecycle.status import Status
from core.tables import UTCDateTime, deliveries

SWEEP_BATCH = 1000
# The longest the sweep waits, beyond the grace, for the workers to reach a delivery.
MAX_QUEUE_WAIT = timedelta(minutes=10)
# How many of the oldest due pending deliveries are read to find the first one in
# flight; past them the workers' place counts as unknown, and the grace as from now.
POSITION_SCAN_ROWS = 2000


async def sweep_stranded(db: Database, *, grace_s: float) -> list[str]:
    """Mark stranded deliveries (see the module docstring) as due now, so that the next
    sweep waits `grace_s` again, and return their ids for re-enqueueing."""
    now = utcnow()
    grace = timedelta(seconds=grace_s)
    horizon = now - grace
    reached = await fetch_one(db, _QUEUE_POSITION, {"now": now})
    if reached is not None:
        horizon = max(
            min(horizon, reached["next_attempt_at"] - grace), now - grace - MAX_QUEUE_WAIT
        )
    stranded = (
        sa.select(deliveries.c.id)
        .where(
            deliveries.c.status == Status.PENDING,
            deliveries.c.next_attempt_at <= horizon,
            sa.or_(deliveries.c.lease_expires_at.is_(None), deliveries.c.lease_expires_at < now),
        )
        .limit(SWEEP_BATCH)
    )
    rows = await fetch_all(
        db,
        deliveries.update()
        .where(deliveries.c.id.in_(stranded.with_for_update(skip_locked=True)))
        .values(next_attempt_at=now)
        .returning(deliveries.c.id),
    )
    return [str(row["id"]) for row in rows]


# Where the workers are in the queue: the earliest due time of a delivery in flight (due,
# with a live lease) among the oldest `POSITION_SCAN_ROWS` due pending ones, by an index
# scan up from the oldest. Those before the first in flight are normally the few the
# sweep is about to move up; the limit bounds the scan when nothing is in flight. (Down
# from now, it would read the whole queue: 140 ms for 67,000 on SQLite.)
_OLDEST_DUE = (
    sa.select(deliveries.c.next_attempt_at, deliveries.c.lease_expires_at)
    .where(
        deliveries.c.status == Status.PENDING,
        deliveries.c.next_attempt_at <= sa.bindparam("now", type_=UTCDateTime),
    )
    .order_by(deliveries.c.next_attempt_at)
    .limit(POSITION_SCAN_ROWS)
    .subquery()
)
_QUEUE_POSITION = (
    sa.select(_OLDEST_DUE.c.next_attempt_at)
    .where(_OLDEST_DUE.c.lease_expires_at > sa.bindparam("now", type_=UTCDateTime))
    .order_by(_OLDEST_DUE.c.next_attempt_at)
    .limit(1)
)
