"""Claiming deliveries for an attempt: take the lease and read the target; or park
them (hold, cancel) or release them unattempted. `records` stores what an attempt did.

The database is the source of truth: a queue message only says "look at delivery X".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.controls import Ordering, WaitingReason
from core.database import Database, FixedInList, Query, WriteUnit, not_by_index, run_in_transaction
from core.lifecycle.changes import locked_state
from core.lifecycle.ordering import WAITING_IN_ORDER
from core.lifecycle.status import Status
from core.tables import UTCDateTime, deliveries, webhook_configs

# A message may arrive a little before the due time it was delayed to.
EARLY_ARRIVAL_SLACK = timedelta(seconds=1)


@dataclass(frozen=True)
class Claim:
    """A delivery this worker holds the lease of, with what it needs to send it."""

    delivery_id: str
    event_id: str
    event_type: str
    config_id: str
    client_id: str
    body: str
    attempt: int
    url: str
    token: str
    secrets: list[str]
    enabled: bool
    deleted: bool
    failing_since: datetime | None
    lease_expires_at: datetime
    # The configuration's delivery controls that act on attempts (SPEC 13).
    headers: dict[str, str]
    fifo: bool
    rate_limit_per_s: int | None
    max_in_flight: int | None
    # The event's trace context: the parent of the attempt's span (SPEC 17).
    traceparent: str | None


def _secrets(config: dict[str, Any], now: datetime) -> list[str]:
    secrets = [config["signing_secret"]]
    expires = config["previous_secret_expires_at"]
    if config["previous_signing_secret"] and expires is not None and expires > now:
        secrets.append(config["previous_signing_secret"])
    return secrets


# Built once with a fixed number of id slots: building and compiling a statement per
# call cost more than running it.
_IDS = FixedInList("id", 16)
_CLAIM = (
    deliveries.update()
    .where(
        _IDS.in_(deliveries.c.id),
        not_by_index(deliveries.c.status == Status.PENDING),
        not_by_index(deliveries.c.next_attempt_at <= sa.bindparam("due_by", type_=UTCDateTime)),
        sa.or_(
            deliveries.c.lease_expires_at.is_(None),
            deliveries.c.lease_expires_at < sa.bindparam("now", type_=UTCDateTime),
        ),
        # A fifo configuration's delivery goes only as its head (`ordering`).
        sa.not_(WAITING_IN_ORDER),
    )
    .values(lease_expires_at=sa.bindparam("lease"))
    .returning(
        deliveries.c.id,
        deliveries.c.event_id,
        deliveries.c.event_type,
        deliveries.c.config_id,
        deliveries.c.body,
        deliveries.c.attempt_count,
        deliveries.c.traceparent,
    )
)
_CONFIGS = sa.select(webhook_configs).where(_IDS.in_(webhook_configs.c.id))


async def claim(db: Database, delivery_ids: Sequence[str], *, lease_s: float) -> list[Claim]:
    """Take the lease of each pending, due delivery that nobody else holds; those that
    are final, not due yet or leased by another worker are left out. Two statements for
    each 16 ids, the lease and the configurations, as a write unit: on SQLite it shares
    the process's next group commit instead of waiting for the lock on its own."""
    return await run_in_transaction(db, _claiming(delivery_ids, lease_s))


def _claiming(delivery_ids: Sequence[str], lease_s: float) -> WriteUnit[list[Claim]]:
    claims = []
    for chunk in _IDS.chunks(delivery_ids):
        now = utcnow()
        lease_expires_at = now + timedelta(seconds=lease_s)
        times = {"due_by": now + EARLY_ARRIVAL_SLACK, "now": now, "lease": lease_expires_at}
        rows = yield Query(_CLAIM, _IDS.values(chunk) | times)
        if not rows:
            continue
        config_ids = list({row["config_id"] for row in rows})
        found = yield Query(_CONFIGS, _IDS.values(config_ids))
        configs = {config["id"]: config for config in found}
        claims += [
            _claim(row, configs[row["config_id"]], now=now, lease_expires_at=lease_expires_at)
            for row in rows
        ]
    return claims


def _claim(
    delivery: dict[str, Any],
    config: dict[str, Any],
    *,
    now: datetime,
    lease_expires_at: datetime,
) -> Claim:
    return Claim(
        delivery_id=delivery["id"],
        event_id=delivery["event_id"],
        event_type=delivery["event_type"],
        config_id=delivery["config_id"],
        client_id=config["client_id"],
        body=delivery["body"],
        attempt=delivery["attempt_count"] + 1,
        url=config["url"],
        token=config["authorization_token"],
        secrets=_secrets(config, now),
        enabled=config["enabled"],
        deleted=config["deleted_at"] is not None,
        failing_since=config["failing_since"],
        lease_expires_at=lease_expires_at,
        headers=config["headers"],
        fifo=config["ordering"] == Ordering.FIFO,
        rate_limit_per_s=config["rate_limit_per_s"],
        max_in_flight=config["max_in_flight"],
        traceparent=delivery["traceparent"],
    )


async def park(db: Database, claim: Claim) -> Status | None:
    """Hold (configuration disabled) or cancel (deleted) a claimed delivery without an
    attempt, as the configuration is NOW: the row is read under a share lock, so a
    re-enable that commits meanwhile either waits for this and releases the delivery, or
    is seen here. Returns the status set, or None if the configuration is usable again."""
    return await run_in_transaction(db, _parking(claim))


_PARK = (
    deliveries.update()
    .where(
        deliveries.c.id == sa.bindparam("delivery_id"),
        not_by_index(deliveries.c.status == Status.PENDING),
    )
    .values(
        status=sa.bindparam("status"),
        lease_expires_at=None,
        next_attempt_at=None,
        waiting_reason=None,
    )
)


def _parking(claim: Claim) -> WriteUnit[Status | None]:
    config = yield from locked_state(claim.config_id)
    if config["deleted_at"] is None and config["enabled"]:
        return None
    status = Status.CANCELLED if config["deleted_at"] is not None else Status.HELD
    yield Query(_PARK, {"delivery_id": claim.delivery_id, "status": status})
    return status


# The delivery `delivery_id` while the lease `held_lease` is still its own: pending and
# not taken over by another worker after the lease ran out.
STILL_LEASED = sa.and_(
    deliveries.c.id == sa.bindparam("delivery_id"),
    not_by_index(deliveries.c.status == Status.PENDING),
    deliveries.c.lease_expires_at == sa.bindparam("held_lease"),
)
_RELEASE = (
    deliveries.update()
    .where(STILL_LEASED)
    .values(
        lease_expires_at=None,
        next_attempt_at=sa.bindparam("due_at"),
        waiting_reason=sa.bindparam("waiting_reason"),
    )
)


async def release(
    db: Database,
    claims: Sequence[tuple[Claim, datetime]],
    *,
    reasons: Mapping[str, WaitingReason] | None = None,
) -> None:
    """Give back the leases of claimed deliveries that were not attempted, each due
    again at the time given, with the reason it waits (by delivery id; none for a full
    lane): no attempt is recorded or charged. A lease that ran out and was taken over
    meanwhile is left to its new holder."""
    reasons = reasons or {}
    rows = [
        {
            "delivery_id": claim.delivery_id,
            "held_lease": claim.lease_expires_at,
            "due_at": due_at,
            "waiting_reason": reasons.get(claim.delivery_id),
        }
        for claim, due_at in claims
    ]
    await run_in_transaction(db, _releasing(rows))


def _releasing(rows: list[dict[str, Any]]) -> WriteUnit[None]:
    yield Query.for_each(_RELEASE, rows)
