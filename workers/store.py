"""The database side of one delivery attempt: take the lease, read the target, record
the attempt and the delivery's new state in one transaction.

The database is the source of truth: a queue message only says "look at delivery X".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.configs import locked_state
from core.database import Database, Slots, execute_many, fetch_bound, record_dict
from core.tables import UTCDateTime, attempts, deliveries, webhook_configs

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


# Built once with a fixed number of id slots: building and compiling a statement per
# call cost more than running it.
_IDS = Slots("id", 16)
_CLAIM = (
    deliveries.update()
    .where(
        _IDS.in_(deliveries.c.id),
        deliveries.c.status == Status.PENDING,
        deliveries.c.next_attempt_at <= sa.bindparam("due_by", type_=UTCDateTime),
        sa.or_(
            deliveries.c.lease_expires_at.is_(None),
            deliveries.c.lease_expires_at < sa.bindparam("now", type_=UTCDateTime),
        ),
    )
    .values(lease_expires_at=sa.bindparam("lease_expires_at"))
    .returning(
        deliveries.c.id,
        deliveries.c.event_id,
        deliveries.c.config_id,
        deliveries.c.body,
        deliveries.c.attempt_count,
    )
)
_CONFIGS = sa.select(webhook_configs).where(_IDS.in_(webhook_configs.c.id))


async def claim(db: Database, delivery_ids: Sequence[str], *, lease_s: float) -> list[Claim]:
    """Take the lease of each pending, due delivery that nobody else holds; those that
    are final, not due yet or leased by another worker are left out. Two statements for
    each 16 ids: the lease, and the configurations."""
    claims = []
    for chunk in _IDS.chunks(delivery_ids):
        claims += await _claim_slots(db, chunk, lease_s)
    return claims


async def _claim_slots(db: Database, delivery_ids: Sequence[str], lease_s: float) -> list[Claim]:
    now = utcnow()
    lease_expires_at = now + timedelta(seconds=lease_s)
    values = {"due_by": now + EARLY_ARRIVAL_SLACK, "now": now, "lease_expires_at": lease_expires_at}
    leased = await fetch_bound(db, _CLAIM, _IDS.values(delivery_ids) | values)
    if not leased:
        return []
    rows = [record_dict(row) for row in leased]
    config_ids = list({row["config_id"] for row in rows})
    configs = {
        config["id"]: config
        for config in map(record_dict, await fetch_bound(db, _CONFIGS, _IDS.values(config_ids)))
    }
    return [
        _claim(row, configs[row["config_id"]], now=now, lease_expires_at=lease_expires_at)
        for row in rows
    ]


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


@dataclass(frozen=True)
class Result:
    """One attempt of a claimed delivery and what it decided: the delivery's new status,
    its next due time while pending, and what it says of the endpoint."""

    claim: Claim
    attempt: AttemptRecord
    status: Status
    next_attempt_at: datetime | None
    health: Health


_INSERT_ATTEMPT = attempts.insert().values(
    {
        name: sa.bindparam(name)
        for name in ["delivery_id", "number", *(f.name for f in fields(AttemptRecord))]
    }
)
# A delivery cancelled while in flight stays cancelled; one whose lease ran out and was
# taken over belongs to the new holder (the attempt is still on record).
_UPDATE_DELIVERY = (
    deliveries.update()
    .where(
        deliveries.c.id == sa.bindparam("delivery_id"),
        deliveries.c.status == Status.PENDING,
        deliveries.c.lease_expires_at == sa.bindparam("held_lease"),
    )
    .values(
        status=sa.bindparam("status"),
        attempt_count=sa.bindparam("number"),
        last_attempt_at=sa.bindparam("started_at"),
        next_attempt_at=sa.bindparam("next_attempt_at"),
        lease_expires_at=None,
        delivered_at=sa.bindparam("delivered_at"),
    )
)


async def record(db: Database, results: Sequence[Result], *, disable_after_s: float) -> None:
    """Store the endpoints' health, the attempts and the deliveries' new states, and
    release the leases, all in one transaction of a few statements however many.

    Rows are locked in the order the fan-out locks them, so that concurrent batches and
    fan-outs cannot deadlock on PostgreSQL: configurations first, by (client, id), then
    deliveries by id."""
    rows = sorted(map(_result_row, results), key=lambda row: str(row["delivery_id"]))
    async with db.transaction():
        for (_, config_id), verdict in sorted(_health_by_config(results).items()):
            health, failing_since, now = verdict
            await _update_health(
                db,
                config_id,
                health,
                failing_since=failing_since,
                now=now,
                disable_after_s=disable_after_s,
            )
        await execute_many(db, _INSERT_ATTEMPT, rows)
        await execute_many(db, _UPDATE_DELIVERY, rows)


def _result_row(result: Result) -> dict[str, Any]:
    attempt = result.attempt
    finished_at = attempt.started_at + timedelta(milliseconds=attempt.duration_ms)
    return {
        **asdict(attempt),
        "delivery_id": result.claim.delivery_id,
        "number": result.claim.attempt,
        "held_lease": result.claim.lease_expires_at,
        "status": result.status,
        "next_attempt_at": result.next_attempt_at,
        "delivered_at": finished_at if result.status == Status.DELIVERED else None,
    }


def _health_by_config(
    results: Sequence[Result],
) -> dict[tuple[str, str], tuple[Health, datetime | None, datetime]]:
    """One verdict per endpoint, by (client, configuration): `gone` wins, then any
    success, else failing."""
    verdicts: dict[tuple[str, str], tuple[Health, datetime | None, datetime]] = {}
    rank = {Health.FAILING: 0, Health.OK: 1, Health.GONE: 2}
    for result in results:
        claim, now = result.claim, result.attempt.started_at
        key = (claim.client_id, claim.config_id)
        seen = verdicts.get(key)
        if seen is None or rank[result.health] > rank[seen[0]]:
            verdicts[key] = (result.health, claim.failing_since, now)
    return verdicts


async def _update_health(
    db: Database,
    config_id: str,
    health: Health,
    *,
    failing_since: datetime | None,
    now: datetime,
    disable_after_s: float,
) -> None:
    """`gone` disables at once; failing since longer than `disable_after_s` disables;
    a success ends the failing streak. Costs no statement on the common path."""
    changes: dict[str, Any] = {}
    if health == Health.GONE:
        changes = {"enabled": False, "disabled_reason": "gone"}
    elif health == Health.OK:
        changes = {} if failing_since is None else {"failing_since": None}
    elif failing_since is None:
        changes = {"failing_since": now}
    elif now - failing_since >= timedelta(seconds=disable_after_s):
        changes = {"enabled": False, "disabled_reason": "failing"}
    if changes:
        await db.execute(
            webhook_configs.update().where(webhook_configs.c.id == config_id).values(**changes)
        )
