"""The worker's database side: the lease, what a claim carries, and recording an
attempt together with the delivery's new state (both backends, time moved by freezegun)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory

from core import configs, lifecycle
from core.clock import utcnow
from core.database import Database
from core.events import event_body
from core.lifecycle import AttemptRecord, Claim, Health, Result, Status
from core.tables import webhook_configs
from tests.outbox.helpers import (
    TOKEN,
    attempts_of,
    delivery,
    disable_config,
    new_client_id,
    new_config,
    new_delivery,
)

T0 = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)
LEASE_S = 30.0
LEASE = timedelta(seconds=LEASE_S)
DISABLE_AFTER_S = 5 * 24 * 3600.0


@pytest.fixture
def clock_start() -> datetime:
    return T0


@pytest.fixture
async def config(db: Database, clock: FrozenDateTimeFactory) -> dict[str, Any]:
    return await new_config(db, await new_client_id(db), url="https://hooks.example/in")


async def _claimed(db: Database, delivery_id: str) -> Claim:
    [claim] = await lifecycle.claim(db, [delivery_id], lease_s=LEASE_S)
    return claim


async def _record(
    db: Database,
    claim: Claim,
    attempt: AttemptRecord,
    *,
    status: Status,
    next_attempt_at: datetime | None,
) -> None:
    """`lifecycle.record` with the endpoint's health as this attempt reports it."""
    ok = attempt.status_code is not None and 200 <= attempt.status_code < 300
    result = Result(
        claim=claim,
        attempt=attempt,
        status=status,
        next_attempt_at=next_attempt_at,
        health=Health.OK if ok else Health.FAILING,
    )
    await lifecycle.record(db, [result], disable_after_s=DISABLE_AFTER_S)


def _attempt(
    *, status_code: int | None = 500, error: str | None = "http_status", body: str | None = "no"
) -> AttemptRecord:
    return AttemptRecord(
        started_at=T0,
        duration_ms=250,
        status_code=status_code,
        error=error,
        response_body=body,
    )


# --- claim ----------------------------------------------------------------------------


async def test_a_claim_carries_what_the_attempt_needs_and_takes_the_lease(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    delivery_id = await new_delivery(db, config)
    row = await delivery(db, delivery_id)

    claim = await _claimed(db, delivery_id)

    assert claim.delivery_id == delivery_id
    assert claim.event_id == row["event_id"]
    assert claim.config_id == config["id"]
    assert claim.body == event_body("survey_created", {})
    assert claim.attempt == 1
    assert claim.url == "https://hooks.example/in"
    assert claim.token == TOKEN
    assert claim.secrets == [config["signing_secret"]]
    assert (claim.enabled, claim.deleted) == (True, False)
    assert (await delivery(db, delivery_id))["lease_expires_at"] == T0 + LEASE


async def test_the_lease_is_taken_once_until_it_expires(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    delivery_id = await new_delivery(db, config)
    await _claimed(db, delivery_id)

    # While the lease holds, nobody else gets the delivery
    assert await lifecycle.claim(db, [delivery_id], lease_s=LEASE_S) == []
    clock.move_to(T0 + LEASE - timedelta(seconds=1))
    assert await lifecycle.claim(db, [delivery_id], lease_s=LEASE_S) == []

    # After it expired (the worker died), another worker takes it for a new lease
    clock.move_to(T0 + LEASE + timedelta(seconds=1))
    again = await _claimed(db, delivery_id)
    assert again.attempt == 1
    lease_end = (await delivery(db, delivery_id))["lease_expires_at"]
    assert lease_end == T0 + 2 * LEASE + timedelta(seconds=1)


async def test_the_next_attempt_number_follows_the_attempt_count(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    delivery_id = await new_delivery(db, config, attempt_count=4)
    assert (await _claimed(db, delivery_id)).attempt == 5


async def test_a_delivery_that_is_not_due_yet_is_refused(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    later = await new_delivery(db, config, next_attempt_at=T0 + timedelta(seconds=5))
    almost = await new_delivery(db, config, next_attempt_at=T0 + timedelta(milliseconds=500))

    assert await lifecycle.claim(db, [later], lease_s=LEASE_S) == []
    assert (await delivery(db, later))["lease_expires_at"] is None
    # a queue message may arrive a little early: within a second is due
    assert await lifecycle.claim(db, [almost], lease_s=LEASE_S) != []
    clock.move_to(T0 + timedelta(seconds=5))
    assert await lifecycle.claim(db, [later], lease_s=LEASE_S) != []


@pytest.mark.parametrize("status", ["delivered", "failed", "cancelled", "held"])
async def test_a_delivery_that_is_not_pending_is_refused(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any], status: str
) -> None:
    delivery_id = await new_delivery(db, config, status=status, next_attempt_at=T0)

    assert await lifecycle.claim(db, [delivery_id], lease_s=LEASE_S) == []
    row = await delivery(db, delivery_id)
    assert row["status"] == status
    assert row["lease_expires_at"] is None


async def test_an_unknown_delivery_is_refused(db: Database) -> None:
    assert await lifecycle.claim(db, [str(uuid.uuid4())], lease_s=LEASE_S) == []


async def test_during_a_rotation_both_secrets_sign_for_24_hours(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    old = config["signing_secret"]
    new = await configs.rotate_secret(db, config["client_id"], config["id"])
    assert new is not None and new != old
    first = await new_delivery(db, config)
    second = await new_delivery(db, config)

    assert (await _claimed(db, first)).secrets == [new, old]
    clock.move_to(T0 + timedelta(hours=24, seconds=1))
    assert (await _claimed(db, second)).secrets == [new]


async def test_a_claim_reports_a_disabled_or_deleted_configuration(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    disabled = await new_delivery(db, config)
    await disable_config(db, config["id"])
    claim = await _claimed(db, disabled)
    assert (claim.enabled, claim.deleted) == (False, False)

    # A deletion that lands between fan-out and claim (the delivery still pending)
    deleted = await new_delivery(db, config)
    await db.execute(
        webhook_configs.update().where(webhook_configs.c.id == config["id"]).values(deleted_at=T0)
    )
    assert (await _claimed(db, deleted)).deleted is True


# --- record ---------------------------------------------------------------------------


async def test_record_stores_the_attempt_and_the_next_due_time(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    delivery_id = await new_delivery(db, config)
    claim = await _claimed(db, delivery_id)
    next_at = T0 + timedelta(seconds=5)

    await _record(db, claim, _attempt(), status=Status.PENDING, next_attempt_at=next_at)

    [attempt] = await attempts_of(db, delivery_id)
    assert {key: attempt[key] for key in attempt if key not in ("id", "delivery_id")} == {
        "number": 1,
        "started_at": T0,
        "duration_ms": 250,
        "status_code": 500,
        "error": "http_status",
        "response_body": "no",
    }
    row = await delivery(db, delivery_id)
    assert row["status"] == "pending"
    assert row["attempt_count"] == 1
    assert row["last_attempt_at"] == T0
    assert row["next_attempt_at"] == next_at
    assert row["lease_expires_at"] is None, "the lease is released"
    assert row["delivered_at"] is None


async def test_record_of_a_success_sets_delivered_at(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    delivery_id = await new_delivery(db, config, attempt_count=2)
    claim = await _claimed(db, delivery_id)

    await _record(
        db,
        claim,
        _attempt(status_code=204, error=None, body=""),
        status=Status.DELIVERED,
        next_attempt_at=None,
    )

    row = await delivery(db, delivery_id)
    assert row["status"] == "delivered"
    assert row["attempt_count"] == 3
    assert row["delivered_at"] == T0 + timedelta(milliseconds=250)
    assert row["next_attempt_at"] is None
    assert [a["number"] for a in await attempts_of(db, delivery_id)] == [3]


async def test_record_of_a_connection_error_has_no_status_code(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    delivery_id = await new_delivery(db, config)
    claim = await _claimed(db, delivery_id)

    await _record(
        db,
        claim,
        _attempt(status_code=None, error="connect_error", body=None),
        status=Status.FAILED,
        next_attempt_at=None,
    )

    [attempt] = await attempts_of(db, delivery_id)
    assert (attempt["status_code"], attempt["error"], attempt["response_body"]) == (
        None,
        "connect_error",
        None,
    )
    assert (await delivery(db, delivery_id))["status"] == "failed"


async def test_record_is_atomic(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    # Given a claimed delivery, and a delivery update that fails after the attempt's insert
    # (a naive datetime is refused by the column type when the update is executed)
    delivery_id = await new_delivery(db, config)
    claim = await _claimed(db, delivery_id)
    before = await delivery(db, delivery_id)

    with pytest.raises(ValueError, match="naive"):
        await _record(
            db, claim, _attempt(), status=Status.PENDING, next_attempt_at=datetime(2030, 6, 2)
        )

    # Then neither the attempt nor the delivery's change was written
    assert await attempts_of(db, delivery_id) == []
    assert await delivery(db, delivery_id) == before


async def test_a_delivery_cancelled_in_flight_stays_cancelled(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    # Given a delivery whose worker is mid-request when its configuration is deleted
    delivery_id = await new_delivery(db, config)
    claim = await _claimed(db, delivery_id)
    assert await configs.delete_config(db, config["client_id"], config["id"]) is not None
    assert (await delivery(db, delivery_id))["status"] == "cancelled"

    # When the worker records a successful attempt
    await _record(
        db,
        claim,
        _attempt(status_code=200, error=None, body="ok"),
        status=Status.DELIVERED,
        next_attempt_at=None,
    )

    # Then the attempt is in the audit, without the receiver's answer (an erasure cancels
    # too, and the answer may echo the patient), and the delivery stays cancelled
    row = await delivery(db, delivery_id)
    assert row["status"] == "cancelled"
    assert row["delivered_at"] is None
    assert row["next_attempt_at"] is None
    [attempt] = await attempts_of(db, delivery_id)
    assert (attempt["status_code"], attempt["response_body"]) == (200, None)


async def test_an_attempt_keeps_the_receivers_answer(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    delivery_id = await new_delivery(db, config)
    claim = await _claimed(db, delivery_id)

    await _record(
        db,
        claim,
        _attempt(status_code=500, error="http_status", body="upstream down"),
        status=Status.PENDING,
        next_attempt_at=T0 + timedelta(minutes=1),
    )

    [attempt] = await attempts_of(db, delivery_id)
    assert (attempt["number"], attempt["status_code"], attempt["error"]) == (1, 500, "http_status")
    assert attempt["response_body"] == "upstream down"
    assert attempt["started_at"] == T0
    assert attempt["duration_ms"] == 250


async def test_park_holds_a_delivery_of_a_disabled_configuration(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    delivery_id = await new_delivery(db, config)
    await disable_config(db, config["id"])
    claim = await _claimed(db, delivery_id)

    assert await lifecycle.park(db, claim) == Status.HELD

    row = await delivery(db, delivery_id)
    assert (row["status"], row["lease_expires_at"], row["next_attempt_at"]) == ("held", None, None)
    assert row["attempt_count"] == 0
    assert await attempts_of(db, delivery_id) == []


async def test_park_cancels_a_delivery_of_a_deleted_configuration(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    delivery_id = await new_delivery(db, config)
    claim = await _claimed(db, delivery_id)
    await db.execute(
        webhook_configs.update().where(webhook_configs.c.id == config["id"]).values(deleted_at=T0)
    )

    assert await lifecycle.park(db, claim) == Status.CANCELLED

    row = await delivery(db, delivery_id)
    assert (row["status"], row["lease_expires_at"], row["next_attempt_at"]) == (
        "cancelled",
        None,
        None,
    )
    assert await attempts_of(db, delivery_id) == []


async def test_park_leaves_a_delivery_whose_configuration_was_re_enabled(
    db: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    # Claimed while disabled; re-enabled before the worker parks it
    delivery_id = await new_delivery(db, config)
    await disable_config(db, config["id"])
    claim = await _claimed(db, delivery_id)
    assert claim.enabled is False
    await db.execute(
        webhook_configs.update()
        .where(webhook_configs.c.id == config["id"])
        .values(enabled=True, disabled_reason=None)
    )

    assert await lifecycle.park(db, claim) is None

    row = await delivery(db, delivery_id)
    assert row["status"] == "pending"
    assert row["lease_expires_at"] == T0 + LEASE, "the worker keeps its lease to send it"


async def test_concurrent_records_of_the_same_endpoints_do_not_deadlock(db: Database) -> None:
    # Given batches that each hold a delivery to two endpoints, listed in either order,
    # all claimed while both endpoints looked healthy
    client_id = await new_client_id(db)
    one, two = await new_config(db, client_id), await new_config(db, client_id)
    batches = []
    for n in range(12):
        ids = [await new_delivery(db, config) for config in ((one, two) if n % 2 else (two, one))]
        claims = {
            claim.delivery_id: claim for claim in await lifecycle.claim(db, ids, lease_s=LEASE_S)
        }
        batches.append([claims[delivery_id] for delivery_id in ids])

    # When their failures are recorded all at once (each marks both endpoints failing)
    await asyncio.gather(
        *(
            lifecycle.record(
                db,
                [
                    Result(claim, _attempt(), Status.PENDING, utcnow(), Health.FAILING)
                    for claim in batch
                ],
                disable_after_s=DISABLE_AFTER_S,
            )
            for batch in batches
        )
    )

    # Then every attempt is on record, and both endpoints are failing
    for claim in (claim for batch in batches for claim in batch):
        assert len(await attempts_of(db, claim.delivery_id)) == 1
    for config in (one, two):
        stored = await db.fetch_one(
            webhook_configs.select().where(webhook_configs.c.id == config["id"])
        )
        assert stored is not None and stored._mapping["failing_since"] is not None
