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
from core.database import Database, FixedInList, Query, WriteUnit, run_in_transaction
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
_IDS = FixedInList("id", 16)
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
    .values(lease_expires_at=sa.bindparam("lease"))
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
    return await run_in_transaction(db, _parking(claim))


_PARK = (
    deliveries.update()
    .where(deliveries.c.id == sa.bindparam("delivery_id"), deliveries.c.status == Status.PENDING)
    .values(status=sa.bindparam("status"), lease_expires_at=None, next_attempt_at=None)
)


def _parking(claim: Claim) -> WriteUnit[Status | None]:
    config = yield from locked_state(claim.config_id)
    if config["deleted_at"] is None and config["enabled"]:
        return None
    status = Status.CANCELLED if config["deleted_at"] is not None else Status.HELD
    yield Query(_PARK, {"delivery_id": claim.delivery_id, "status": status})
    return status


_RELEASE = (
    deliveries.update()
    .where(
        deliveries.c.id == sa.bindparam("delivery_id"),
        deliveries.c.status == Status.PENDING,
        deliveries.c.lease_expires_at == sa.bindparam("held_lease"),
    )
    .values(lease_expires_at=None, next_attempt_at=sa.bindparam("due_at"))
)


async def release(db: Database, claims: Sequence[tuple[Claim, datetime]]) -> None:
    """Give back the leases of claimed deliveries that were not attempted, each due
    again at the time given: no attempt is recorded or charged. A lease that ran out and
    was taken over meanwhile is left to its new holder."""
    rows = [
        {"delivery_id": claim.delivery_id, "held_lease": claim.lease_expires_at, "due_at": due_at}
        for claim, due_at in claims
    ]
    await run_in_transaction(db, _releasing(rows))


def _releasing(rows: list[dict[str, Any]]) -> WriteUnit[None]:
    yield Query.for_each(_RELEASE, rows)


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
    release the leases, all in one transaction of a few statements however many (on
    SQLite, group-committed with the records of the process's other batches).

    Rows are locked in the order the fan-out locks them, so that concurrent batches and
    fan-outs cannot deadlock on PostgreSQL: configurations first, by (client, id), then
    deliveries by id."""
    rows = sorted(map(_result_row, results), key=lambda row: str(row["delivery_id"]))
    health = [
        (config_id, changes)
        for (_, config_id), verdict in sorted(_health_by_config(results).items())
        if (changes := _health_changes(*verdict, disable_after_s=disable_after_s))
    ]
    await run_in_transaction(db, _recording(rows, health))


def _recording(
    rows: list[dict[str, Any]], health: list[tuple[str, dict[str, Any]]]
) -> WriteUnit[None]:
    for config_id, changes in health:
        yield Query(
            webhook_configs.update().where(webhook_configs.c.id == config_id).values(**changes)
        )
    yield Query.for_each(_INSERT_ATTEMPT, rows)
    yield Query.for_each(_UPDATE_DELIVERY, rows)


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


def _health_changes(
    health: Health, failing_since: datetime | None, now: datetime, *, disable_after_s: float
) -> dict[str, Any]:
    """`gone` disables at once; failing since longer than `disable_after_s` disables;
    a success ends the failing streak. No change (and no statement) on the common path."""
    if health == Health.GONE:
        return {"enabled": False, "disabled_reason": "gone"}
    if health == Health.OK:
        return {} if failing_since is None else {"failing_since": None}
    if failing_since is None:
        return {"failing_since": now}
    if now - failing_since >= timedelta(seconds=disable_after_s):
        return {"enabled": False, "disabled_reason": "failing"}
    return {}
