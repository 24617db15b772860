"""Finding deliveries that no worker is on: due for longer than a lease with no live
lease (the worker died mid-request, or the queue message was lost to a crash or a
`FLUSHALL`). They are re-enqueued; the lease makes a duplicate message harmless."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from core.clock import utcnow
from core.database import Database, fetch_all
from core.lifecycle.status import Status
from core.tables import deliveries

SWEEP_BATCH = 1000


async def sweep_stranded(db: Database, *, grace_s: float) -> list[str]:
    """Mark stranded deliveries as due now (so the next sweep waits `grace_s` again) and
    return their ids for re-enqueueing."""
    now = utcnow()
    stranded = (
        sa.select(deliveries.c.id)
        .where(
            deliveries.c.status == Status.PENDING,
            deliveries.c.next_attempt_at <= now - timedelta(seconds=grace_s),
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
