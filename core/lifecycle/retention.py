"""Retention: removing final deliveries, their attempts and dispatched outbox rows that
are older than a cutoff, and expired idempotency keys, in small batches so that no table
is locked for long."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from core.database import Database, Query, WriteUnit, fetch_all, run_in_transaction
from core.lifecycle.status import FINAL
from core.tables import attempts, deliveries, idempotency_keys, outbox

PRUNE_BATCH = 1000


@dataclass(frozen=True)
class Pruned:
    deliveries: int = 0
    attempts: int = 0
    outbox: int = 0
    idempotency_keys: int = 0


async def _prune_deliveries_batch(db: Database, cutoff: datetime) -> tuple[int, int]:
    return await run_in_transaction(db, _pruning_deliveries(cutoff))


def _pruning_deliveries(cutoff: datetime) -> WriteUnit[tuple[int, int]]:
    """One batch: its ids are locked until commit on PostgreSQL (SKIP LOCKED, which
    SQLAlchemy renders for it only): a redelivery waits for the prune (then finds
    nothing), and a row a redelivery holds is skipped, not deleted behind its back."""
    last_activity = sa.func.coalesce(
        deliveries.c.delivered_at, deliveries.c.last_attempt_at, deliveries.c.created_at
    )
    old = (
        sa.select(deliveries.c.id)
        .where(deliveries.c.status.in_(FINAL), last_activity < cutoff)
        .limit(PRUNE_BATCH)
        .with_for_update(skip_locked=True)
    )
    ids = [str(row["id"]) for row in (yield Query(old))]
    if not ids:
        return 0, 0
    removed_attempts = yield Query(
        attempts.delete().where(attempts.c.delivery_id.in_(ids)).returning(attempts.c.id)
    )
    yield Query(deliveries.delete().where(deliveries.c.id.in_(ids)))
    return len(ids), len(removed_attempts)


async def _prune_outbox_batch(db: Database, cutoff: datetime) -> int:
    old = (
        sa.select(outbox.c.seq)
        .where(outbox.c.dispatched_at.is_not(None), outbox.c.created_at < cutoff)
        .limit(PRUNE_BATCH)
    )
    rows = await fetch_all(db, outbox.delete().where(outbox.c.seq.in_(old)).returning(outbox.c.seq))
    return len(rows)


# The batch of expired keys, by its primary key (the table has no single-column id).
_EXPIRED_KEYS = (
    sa.select(idempotency_keys.c.client_id, idempotency_keys.c.route, idempotency_keys.c.key)
    .where(
        idempotency_keys.c.expires_at
        <= sa.bindparam("now", type_=idempotency_keys.c.expires_at.type)
    )
    .limit(PRUNE_BATCH)
)
_PRUNE_KEYS = (
    idempotency_keys.delete()
    .where(
        sa.tuple_(
            idempotency_keys.c.client_id, idempotency_keys.c.route, idempotency_keys.c.key
        ).in_(_EXPIRED_KEYS)
    )
    .returning(idempotency_keys.c.key)
)


async def prune_idempotency_keys(db: Database, *, now: datetime) -> int:
    """Remove the idempotency keys expired by `now` (whatever `--older-than` says: an
    expired key answers nothing any more); how many."""
    total = 0
    while (removed := len(await fetch_all(db, _PRUNE_KEYS, {"now": now}))) > 0:
        total += removed
        if removed < PRUNE_BATCH:
            break
    return total


async def prune(db: Database, *, older_than: timedelta, now: datetime) -> Pruned:
    """Remove delivered and failed deliveries (with their attempts) whose last activity,
    and dispatched outbox rows whose creation, is older than `now - older_than`; and the
    idempotency keys expired by `now`."""
    cutoff = now - older_than
    total_deliveries = total_attempts = total_outbox = 0
    while True:
        removed, removed_attempts = await _prune_deliveries_batch(db, cutoff)
        total_deliveries += removed
        total_attempts += removed_attempts
        if removed < PRUNE_BATCH:
            break
    while (removed := await _prune_outbox_batch(db, cutoff)) > 0:
        total_outbox += removed
        if removed < PRUNE_BATCH:
            break
    keys = await prune_idempotency_keys(db, now=now)
    return Pruned(total_deliveries, total_attempts, total_outbox, keys)
