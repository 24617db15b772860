"""Recording attempts: the attempt, the delivery's new state and what it says of the
endpoint's health (SPEC 9), in one transaction however many attempts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from core import operational
from core.database import Database, Query, WriteUnit, run_in_transaction
from core.events import OPERATIONAL_EVENTS
from core.lifecycle.attempts import STILL_LEASED, Claim
from core.lifecycle.status import Status
from core.tables import attempts, deliveries, webhook_configs


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


@dataclass(frozen=True)
class Result:
    """One attempt of a claimed delivery and what it decided: the delivery's new status,
    its next due time while pending, and what it says of the endpoint."""

    claim: Claim
    attempt: AttemptRecord
    status: Status
    next_attempt_at: datetime | None
    health: Health


_ATTEMPT_FIELDS = tuple(f.name for f in fields(AttemptRecord))


def _value(name: str) -> sa.BindParameter[Any]:
    # In a SELECT list a parameter has no type of its own: the column's is given (asyncpg
    # renders it as a cast; its bind processor runs on every backend).
    return sa.bindparam(name, type_=attempts.c[name].type)


# The receiver's answer is kept unless the delivery was cancelled while in flight: an
# erasure (SPEC 14) that committed meanwhile must not get the patient back from an echo.
_INSERT_ATTEMPT = attempts.insert().from_select(
    ["delivery_id", "number", *_ATTEMPT_FIELDS],
    sa.select(
        deliveries.c.id,
        *(
            sa.case((deliveries.c.status == Status.CANCELLED, sa.null()), else_=_value(name))
            if name == "response_body"
            else _value(name)
            for name in ("number", *_ATTEMPT_FIELDS)
        ),
    ).where(deliveries.c.id == sa.bindparam("delivery_id")),
)
# A delivery cancelled while in flight stays cancelled; one whose lease ran out and was
# taken over belongs to the new holder (the attempt is still on record).
_UPDATE_DELIVERY = (
    deliveries.update()
    .where(STILL_LEASED)
    .values(
        status=sa.bindparam("status"),
        attempt_count=sa.bindparam("number"),
        last_attempt_at=sa.bindparam("started_at"),
        next_attempt_at=sa.bindparam("next_attempt_at"),
        lease_expires_at=None,
        delivered_at=sa.bindparam("delivered_at"),
        waiting_reason=None,
    )
)


async def record(db: Database, results: Sequence[Result], *, disable_after_s: float) -> None:
    """Store the endpoints' health, the attempts and the deliveries' new states, and
    release the leases, all in one transaction of a few statements however many (on
    SQLite, group-committed with the records of the process's other batches). A
    configuration this disables, and a delivery that ends `failed`, also write their
    operational event (SPEC 15) in it.

    Rows are locked in the order the fan-out locks them, so that concurrent batches and
    fan-outs cannot deadlock on PostgreSQL: configurations first, by (client, id), then
    deliveries by id."""
    rows = sorted(map(_result_row, results), key=lambda row: str(row["delivery_id"]))
    health = [
        (claim, changes, now)
        for _, (verdict, claim, now) in sorted(_health_by_config(results).items())
        if (changes := _health_changes(verdict, claim, now, disable_after_s=disable_after_s))
    ]
    failed = {
        result.claim.delivery_id: result for result in results if result.status == Status.FAILED
    }
    await run_in_transaction(db, _recording(rows, health, failed))


def _recording(
    rows: list[dict[str, Any]],
    health: list[tuple[Claim, dict[str, Any], datetime]],
    failed: dict[str, Result],
) -> WriteUnit[None]:
    for claim, changes, now in health:
        yield from _changing_health(claim, changes, now)
    yield Query.for_each(_INSERT_ATTEMPT, rows)
    yield Query.for_each(
        _UPDATE_DELIVERY, [row for row in rows if row["delivery_id"] not in failed]
    )
    for row in rows:
        if row["delivery_id"] in failed:
            yield from _failing(row, failed[row["delivery_id"]])


_DISABLE = (
    webhook_configs.update()
    .where(
        webhook_configs.c.id == sa.bindparam("config_id"),
        webhook_configs.c.enabled.is_(True),
        webhook_configs.c.deleted_at.is_(None),
    )
    .values(enabled=False, disabled_reason=sa.bindparam("disabled_reason"))
    .returning(webhook_configs.c.id)
)


def _changing_health(claim: Claim, changes: dict[str, Any], now: datetime) -> WriteUnit[None]:
    if changes.get("enabled") is not False:
        update = webhook_configs.update().where(webhook_configs.c.id == claim.config_id)
        yield Query(update.values(**changes))
        return
    # Only a configuration still enabled is disabled (and announced): one that another
    # batch or its client disabled meanwhile keeps its reason, and makes no second event.
    reason = changes["disabled_reason"]
    if (yield Query(_DISABLE, {"config_id": claim.config_id, "disabled_reason": reason})):
        yield operational.webhook_disabled(
            client_id=claim.client_id,
            config_id=claim.config_id,
            url=claim.url,
            disabled_reason=reason,
            at=now,
        )


_FAIL_DELIVERY = _UPDATE_DELIVERY.returning(deliveries.c.id)


def _failing(row: dict[str, Any], result: Result) -> WriteUnit[None]:
    """A delivery that ends `failed`, and its `delivery_failed` event, unless the delivery
    changed meanwhile, or carried an operational event itself (a failing endpoint would
    otherwise announce the failures of the announcements to the others, and back)."""
    changed = yield Query(_FAIL_DELIVERY, row)
    claim = result.claim
    if not changed or claim.event_type in OPERATIONAL_EVENTS:
        return
    yield operational.delivery_failed(
        client_id=claim.client_id,
        config_id=claim.config_id,
        delivery_id=claim.delivery_id,
        event_id=claim.event_id,
        event_type=claim.event_type,
        attempts=claim.attempt,
        last_error=result.attempt.error,
        last_status_code=result.attempt.status_code,
        at=result.attempt.started_at + timedelta(milliseconds=result.attempt.duration_ms),
    )


def _result_row(result: Result) -> dict[str, Any]:
    attempt = result.attempt
    finished_at = attempt.started_at + timedelta(milliseconds=attempt.duration_ms)
    return {
        # Not `asdict`: it deep-copies every value, and these are immutable.
        **{name: getattr(attempt, name) for name in _ATTEMPT_FIELDS},
        "delivery_id": result.claim.delivery_id,
        "number": result.claim.attempt,
        "held_lease": result.claim.lease_expires_at,
        "status": result.status,
        "next_attempt_at": result.next_attempt_at,
        "delivered_at": finished_at if result.status == Status.DELIVERED else None,
    }


def _health_by_config(
    results: Sequence[Result],
) -> dict[tuple[str, str], tuple[Health, Claim, datetime]]:
    """One verdict per endpoint, by (client, configuration): `gone` wins, then any
    success, else failing."""
    verdicts: dict[tuple[str, str], tuple[Health, Claim, datetime]] = {}
    rank = {Health.FAILING: 0, Health.OK: 1, Health.GONE: 2}
    for result in results:
        claim, now = result.claim, result.attempt.started_at
        key = (claim.client_id, claim.config_id)
        seen = verdicts.get(key)
        if seen is None or rank[result.health] > rank[seen[0]]:
            verdicts[key] = (result.health, claim, now)
    return verdicts


def _health_changes(
    health: Health, claim: Claim, now: datetime, *, disable_after_s: float
) -> dict[str, Any]:
    """`gone` disables at once; failing since longer than `disable_after_s` disables;
    a success ends the failing streak. No change (and no statement) on the common path."""
    if health == Health.GONE:
        return {"enabled": False, "disabled_reason": "gone"}
    failing_since = claim.failing_since
    if health == Health.OK:
        return {} if failing_since is None else {"failing_since": None}
    if failing_since is None:
        return {"failing_since": now}
    if now - failing_since >= timedelta(seconds=disable_after_s):
        return {"enabled": False, "disabled_reason": "failing"}
    return {}
