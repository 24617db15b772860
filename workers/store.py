"""The database side of one delivery attempt: take the lease, read the target, record
the attempt and the delivery's new state in one transaction.

The database is the source of truth: a queue message only says "look at delivery X".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.configs import locked_state
from core.database import Database, record_dict
from core.tables import attempts, deliveries, webhook_configs

# A message may arrive a little before the due time it was delayed to.
EARLY_ARRIVAL_SLACK = timedelta(seconds=1)


class Status(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    HELD = "held"


@dataclass(frozen=True)
class Claim:
    """A delivery this worker holds the lease of, with what it needs to send it."""

    delivery_id: str
    event_id: str
    config_id: str
    body: str
    attempt: int
    url: str
    token: str
    secrets: list[str]
    enabled: bool
    deleted: bool
    failing_since: datetime | None
    lease_expires_at: datetime


class Health(StrEnum):
    """What an attempt says about the endpoint (SPEC 9)."""

    OK = "ok"
    FAILING = "failing"
    GONE = "gone"


@dataclass(frozen=True)
class AttemptRecord:
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None


def _secrets(config: dict[str, Any], now: datetime) -> list[str]:
    secrets = [config["signing_secret"]]
    expires = config["previous_secret_expires_at"]
    if config["previous_signing_secret"] and expires is not None and expires > now:
        secrets.append(config["previous_signing_secret"])
    return secrets


async def claim(db: Database, delivery_id: str, *, lease_s: float) -> Claim | None:
    """Take the lease of a pending, due delivery that nobody else holds; None if the
    delivery is final, not due yet, or leased by another worker."""
    now = utcnow()
    lease_expires_at = now + timedelta(seconds=lease_s)
    leased = await db.fetch_one(
        deliveries.update()
        .where(
            deliveries.c.id == delivery_id,
            deliveries.c.status == Status.PENDING,
            deliveries.c.next_attempt_at <= now + EARLY_ARRIVAL_SLACK,
            sa.or_(deliveries.c.lease_expires_at.is_(None), deliveries.c.lease_expires_at < now),
        )
        .values(lease_expires_at=lease_expires_at)
        .returning(
            deliveries.c.event_id,
            deliveries.c.config_id,
            deliveries.c.body,
            deliveries.c.attempt_count,
        )
    )
    if leased is None:
        return None
    delivery = record_dict(leased)
    config = record_dict(
        await db.fetch_one(
            sa.select(webhook_configs).where(webhook_configs.c.id == delivery["config_id"])
        )
    )
    return Claim(
        delivery_id=delivery_id,
        event_id=delivery["event_id"],
        config_id=delivery["config_id"],
        body=delivery["body"],
        attempt=delivery["attempt_count"] + 1,
        url=config["url"],
        token=config["authorization_token"],
        secrets=_secrets(config, now),
        enabled=config["enabled"],
        deleted=config["deleted_at"] is not None,
        failing_since=config["failing_since"],
        lease_expires_at=lease_expires_at,
    )


async def park(db: Database, claim: Claim) -> Status | None:
    """Hold (configuration disabled) or cancel (deleted) a claimed delivery without an
    attempt, as the configuration is NOW: the row is read under a share lock, so a
    re-enable that commits meanwhile either waits for this and releases the delivery, or
    is seen here. Returns the status set, or None if the configuration is usable again."""
    async with db.transaction():
        config = await locked_state(db, claim.config_id)
        if config["deleted_at"] is None and config["enabled"]:
            return None
        status = Status.CANCELLED if config["deleted_at"] is not None else Status.HELD
        await db.execute(
            deliveries.update()
            .where(deliveries.c.id == claim.delivery_id, deliveries.c.status == Status.PENDING)
            .values(status=status, lease_expires_at=None, next_attempt_at=None)
        )
    return status


async def record(
    db: Database,
    claim: Claim,
    attempt: AttemptRecord,
    *,
    status: Status,
    next_attempt_at: datetime | None,
    health: Health,
    disable_after_s: float,
) -> None:
    """Store the attempt, the delivery's new state and the endpoint's health together,
    and release the lease."""
    finished_at = attempt.started_at + timedelta(milliseconds=attempt.duration_ms)
    async with db.transaction():
        await db.execute(
            attempts.insert().values(
                delivery_id=claim.delivery_id,
                number=claim.attempt,
                started_at=attempt.started_at,
                duration_ms=attempt.duration_ms,
                status_code=attempt.status_code,
                error=attempt.error,
                response_body=attempt.response_body,
            )
        )
        # A delivery cancelled while in flight stays cancelled; one whose lease ran out and
        # was taken over belongs to the new holder (this attempt is still on record).
        await db.execute(
            deliveries.update()
            .where(
                deliveries.c.id == claim.delivery_id,
                deliveries.c.status == Status.PENDING,
                deliveries.c.lease_expires_at == claim.lease_expires_at,
            )
            .values(
                status=status,
                attempt_count=claim.attempt,
                last_attempt_at=attempt.started_at,
                next_attempt_at=next_attempt_at,
                lease_expires_at=None,
                delivered_at=finished_at if status == Status.DELIVERED else None,
            )
        )
        await _update_health(
            db, claim, health, now=attempt.started_at, disable_after_s=disable_after_s
        )


async def _update_health(
    db: Database, claim: Claim, health: Health, *, now: datetime, disable_after_s: float
) -> None:
    """`gone` disables at once; failing since longer than `disable_after_s` disables;
    a success ends the failing streak. Costs no statement on the common path."""
    changes: dict[str, Any] = {}
    if health == Health.GONE:
        changes = {"enabled": False, "disabled_reason": "gone"}
    elif health == Health.OK:
        changes = {} if claim.failing_since is None else {"failing_since": None}
    elif claim.failing_since is None:
        changes = {"failing_since": now}
    elif now - claim.failing_since >= timedelta(seconds=disable_after_s):
        changes = {"enabled": False, "disabled_reason": "failing"}
    if changes:
        await db.execute(
            webhook_configs.update()
            .where(webhook_configs.c.id == claim.config_id)
            .values(**changes)
        )
