"""The transitions that a client or an operator asks for: hold and release with the
configuration, cancel with it, redeliver one delivery, recover the failed ones, and
empty the deliveries of erased surveys (SPEC 14).

Each clears the lease: a worker that holds one finds its delivery changed under it and
records its attempt without touching the new state (see `attempts.record`)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from core.clock import utcnow
from core.database import Database, Query, Row, WriteUnit, fetch_all, fetch_one
from core.lifecycle.status import CANCELLABLE, REDELIVERABLE, Status
from core.tables import attempts, deliveries, webhook_configs

# The share lock is PostgreSQL's (SQLite's write transactions are serial anyway, and
# SQLAlchemy renders no FOR SHARE for it).
_LOCKED_STATE = (
    sa.select(webhook_configs.c.enabled, webhook_configs.c.deleted_at)
    .where(webhook_configs.c.id == sa.bindparam("config_id"))
    .with_for_update(read=True)
)


def locked_state(config_id: str) -> WriteUnit[Row]:
    """In a write unit (`yield from`): `enabled` and `deleted_at` of a configuration,
    under a share lock: a re-enable cannot commit between this read and the unit's
    writes."""
    [state] = yield Query(_LOCKED_STATE, {"config_id": config_id})
    return state


def _due_now() -> dict[str, object]:
    return {
        "status": Status.PENDING,
        "next_attempt_at": utcnow(),
        "lease_expires_at": None,
        "waiting_reason": None,
    }


def releasing_held(config_id: str) -> WriteUnit[list[str]]:
    """In a write unit: the configuration's `held` deliveries become due now; their ids."""
    released = yield Query(
        deliveries.update()
        .where(deliveries.c.config_id == config_id, deliveries.c.status == Status.HELD)
        .values(_due_now())
        .returning(deliveries.c.id)
    )
    return [str(row["id"]) for row in released]


def cancelling(config_id: str) -> WriteUnit[None]:
    """In a write unit: the configuration's deliveries that are not final are cancelled."""
    yield Query(
        deliveries.update()
        .where(deliveries.c.config_id == config_id, deliveries.c.status.in_(CANCELLABLE))
        .values(
            status=Status.CANCELLED,
            next_attempt_at=None,
            lease_expires_at=None,
            waiting_reason=None,
        )
    )


# What an erased delivery's body becomes: the request's shape with nothing of the survey,
# so that the audit and the portal still render it as JSON. Event types are catalogue
# names (no quote or backslash), so the concatenation is valid JSON.
_EMPTIED_BODY = (
    sa.literal('{"event_type":"') + deliveries.c.event_type + sa.literal('","content":{}}')
)


def emptying(client_id: str, *, event_ids: list[str], survey_ids: list[str]) -> WriteUnit[int]:
    """In a write unit: the client's deliveries of these events, or whose body names one
    of these surveys (a delivery may outlive its outbox row, which retention prunes
    first), lose their payload: the body becomes `{"event_type": ..., "content": {}}`,
    the receivers' recorded answers (`attempts.response_body`) become NULL, and those
    still `CANCELLABLE` are cancelled; final ones keep their status. Ids, times, statuses,
    attempt counts and status codes stay. Returns how many deliveries were emptied.

    The body match is a scan of the client's deliveries: erasure is rare, and a
    survey's id (a UUID) appears in its events' bodies as `"id":"<uuid>"`."""
    named = [deliveries.c.body.contains(f'"id":"{sid}"', autoescape=True) for sid in survey_ids]
    theirs = sa.and_(
        deliveries.c.client_id == client_id,
        sa.or_(deliveries.c.event_id.in_(event_ids), *named),
    )
    yield Query(
        deliveries.update()
        .where(theirs, deliveries.c.status.in_(CANCELLABLE))
        .values(
            status=Status.CANCELLED,
            next_attempt_at=None,
            lease_expires_at=None,
            waiting_reason=None,
        )
    )
    emptied = yield Query(
        deliveries.update().where(theirs).values(body=_EMPTIED_BODY).returning(deliveries.c.id)
    )
    ids = [str(row["id"]) for row in emptied]
    if ids:
        yield Query(
            attempts.update().where(attempts.c.delivery_id.in_(ids)).values(response_body=None)
        )
    return len(ids)


async def redeliver(db: Database, config_id: str, delivery_id: str) -> bool:
    """Make the delivery due now (the same `webhook-id`); False if it is not there or is
    not `REDELIVERABLE`. A final delivery gets one more attempt; a pending one keeps its
    retries."""
    row = await fetch_one(
        db,
        deliveries.update()
        .where(
            deliveries.c.id == delivery_id,
            deliveries.c.config_id == config_id,
            deliveries.c.status.in_(REDELIVERABLE),
        )
        .values(_due_now())
        .returning(deliveries.c.id),
    )
    return row is not None


async def recover(
    db: Database, config_id: str, *, since: datetime, until: datetime | None
) -> list[str]:
    """Send again every `failed` delivery created in [since, until); returns their ids."""
    conditions = [
        deliveries.c.config_id == config_id,
        deliveries.c.status == Status.FAILED,
        deliveries.c.created_at >= since,
    ]
    if until is not None:
        conditions.append(deliveries.c.created_at < until)
    rows = await fetch_all(
        db, deliveries.update().where(*conditions).values(_due_now()).returning(deliveries.c.id)
    )
    return [str(row["id"]) for row in rows]
