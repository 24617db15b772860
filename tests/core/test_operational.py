"""Operational events (SPEC 15): each is written to the outbox in the transaction of the
change that causes it, once, and fanned out to the client's other configurations only
(both backends)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory

from core import configs, lifecycle
from core.database import Database
from core.events import OPERATIONAL_EVENTS, EventType
from core.lifecycle import AttemptRecord, Claim, Health, Result, Status
from outbox.fanout import fan_out_batch
from outbox.writer import add_event
from tests.outbox.helpers import (
    deliveries_of,
    delivery,
    new_client_id,
    new_config,
    new_delivery,
    outbox_rows,
)

T0 = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)
LEASE_S = 30.0
DISABLE_AFTER_S = 3600.0
OPERATIONAL = [e.value for e in (EventType.WEBHOOK_DISABLED, EventType.WEBHOOK_ENABLED)]


@pytest.fixture
def clock_start() -> datetime:
    return T0


@pytest.fixture
async def client_id(db: Database, clock: FrozenDateTimeFactory) -> str:
    return await new_client_id(db)


async def _operational(db: Database, client_id: str) -> list[dict[str, Any]]:
    return [
        row for row in await outbox_rows(db, client_id) if row["event_type"] in OPERATIONAL_EVENTS
    ]


async def _attempted(
    db: Database, delivery_id: str, *, status: Status, health: Health, status_code: int | None
) -> None:
    [claim] = await lifecycle.claim(db, [delivery_id], lease_s=LEASE_S)
    await _record(db, claim, status=status, health=health, status_code=status_code)


async def _record(
    db: Database, claim: Claim, *, status: Status, health: Health, status_code: int | None
) -> None:
    attempt = AttemptRecord(
        started_at=datetime.now(UTC),
        duration_ms=100,
        status_code=status_code,
        error=None if status_code else "connect_error",
        response_body=None,
    )
    next_at = datetime.now(UTC) + timedelta(minutes=1) if status == Status.PENDING else None
    result = Result(claim, attempt, status, next_at, health)
    await lifecycle.record(db, [result], disable_after_s=DISABLE_AFTER_S)


# --- webhook_disabled -------------------------------------------------------------------


async def test_a_410_disables_the_configuration_and_announces_it_once(
    db: Database, client_id: str
) -> None:
    config = await new_config(db, client_id, url="https://gone.example/in")
    first, second = await new_delivery(db, config), await new_delivery(db, config)
    claims = await lifecycle.claim(db, [first, second], lease_s=LEASE_S)

    for claim in claims:  # two batches, each saw the configuration enabled
        await _record(db, claim, status=Status.FAILED, health=Health.GONE, status_code=410)

    [event] = [e for e in await _operational(db, client_id) if e["event_type"] != "delivery_failed"]
    assert event["event_type"] == "webhook_disabled"
    assert event["source_config_id"] == config["id"]
    assert event["content"] == {
        "config_id": config["id"],
        "url": "https://gone.example/in",
        "disabled_reason": "gone",
        "at": event["content"]["at"],
    }
    assert datetime.fromisoformat(event["content"]["at"]).tzinfo is not None
    assert (await configs.get_config(db, client_id, config["id"]))["disabled_reason"] == "gone"


async def test_failing_for_longer_than_the_limit_announces_failing(
    db: Database, client_id: str, clock: FrozenDateTimeFactory
) -> None:
    config = await new_config(db, client_id)
    await _attempted(
        db,
        await new_delivery(db, config),
        status=Status.PENDING,
        health=Health.FAILING,
        status_code=500,
    )
    assert await _operational(db, client_id) == []

    clock.tick(timedelta(seconds=DISABLE_AFTER_S + 1))
    await _attempted(
        db,
        await new_delivery(db, config),
        status=Status.PENDING,
        health=Health.FAILING,
        status_code=500,
    )

    [event] = await _operational(db, client_id)
    assert (event["event_type"], event["content"]["disabled_reason"]) == (
        "webhook_disabled",
        "failing",
    )


async def test_a_patch_disables_and_enables_with_one_event_each(
    db: Database, client_id: str
) -> None:
    config = await new_config(db, client_id)
    await configs.update_config(db, client_id, config["id"], {"enabled": False})
    await configs.update_config(db, client_id, config["id"], {"enabled": False})  # no change
    held = await new_delivery(db, config, status="held")

    _, released = await configs.update_config(db, client_id, config["id"], {"enabled": True})
    await configs.update_config(db, client_id, config["id"], {"enabled": True})  # no change

    events = await _operational(db, client_id)
    assert [e["event_type"] for e in events] == ["webhook_disabled", "webhook_enabled"]
    assert events[0]["content"]["disabled_reason"] == "manual"
    assert released == [held]
    assert events[1]["content"]["released"] == 1
    assert {e["source_config_id"] for e in events} == {config["id"]}


async def test_a_patch_of_another_clients_configuration_announces_nothing(
    db: Database, client_id: str
) -> None:
    config = await new_config(db, client_id)
    other = await new_client_id(db)

    assert await configs.update_config(db, other, config["id"], {"enabled": False}) == (None, [])

    assert await _operational(db, client_id) == []
    assert await _operational(db, other) == []


# --- delivery_failed --------------------------------------------------------------------


async def test_a_delivery_that_ends_failed_announces_it(db: Database, client_id: str) -> None:
    config = await new_config(db, client_id)
    delivery_id = await new_delivery(db, config)
    row = await delivery(db, delivery_id)

    await _attempted(db, delivery_id, status=Status.FAILED, health=Health.FAILING, status_code=503)

    [event] = await _operational(db, client_id)
    assert event["event_type"] == "delivery_failed"
    assert event["source_config_id"] == config["id"]
    content = event["content"]
    assert content == {
        "config_id": config["id"],
        "delivery_id": delivery_id,
        "event_id": row["event_id"],
        "event_type": "survey_created",
        "attempts": 1,
        "last_error": None,
        "last_status_code": 503,
        "at": content["at"],
    }
    assert (await delivery(db, delivery_id))["status"] == Status.FAILED


async def test_a_retry_announces_nothing(db: Database, client_id: str) -> None:
    config = await new_config(db, client_id)
    await _attempted(
        db,
        await new_delivery(db, config),
        status=Status.PENDING,
        health=Health.FAILING,
        status_code=503,
    )
    assert await _operational(db, client_id) == []


@pytest.mark.parametrize("event_type", ["webhook_disabled", "delivery_failed"])
async def test_a_failed_delivery_of_an_operational_event_is_not_announced(
    db: Database, client_id: str, event_type: str
) -> None:
    """Else two failing endpoints would announce each other's failures forever."""
    config = await new_config(db, client_id)
    delivery_id = await new_delivery(db, config, event_type=event_type)

    await _attempted(db, delivery_id, status=Status.FAILED, health=Health.FAILING, status_code=500)

    assert await _operational(db, client_id) == []
    assert (await delivery(db, delivery_id))["status"] == Status.FAILED


async def test_a_delivery_cancelled_in_flight_is_not_announced(
    db: Database, client_id: str
) -> None:
    config = await new_config(db, client_id)
    delivery_id = await new_delivery(db, config)
    [claim] = await lifecycle.claim(db, [delivery_id], lease_s=LEASE_S)
    await configs.delete_config(db, client_id, config["id"])

    await _record(db, claim, status=Status.FAILED, health=Health.FAILING, status_code=500)

    assert (await delivery(db, delivery_id))["status"] == Status.CANCELLED
    assert await _operational(db, client_id) == []


# --- fan-out ----------------------------------------------------------------------------


async def test_an_operational_event_goes_to_the_clients_other_subscribed_configurations(
    db: Database, client_id: str
) -> None:
    about = await new_config(db, client_id, events=[*OPERATIONAL, "survey_created"])
    sibling = await new_config(db, client_id, events=OPERATIONAL)
    await new_config(db, client_id, events=["survey_created"])  # not subscribed
    stranger = await new_config(db, await new_client_id(db), events=OPERATIONAL)
    await configs.update_config(db, client_id, about["id"], {"enabled": False})

    while (await fan_out_batch(db, batch_size=100)).events:  # earlier tests' events too
        pass

    made = await deliveries_of(db, client_id=client_id, event_type="webhook_disabled")
    assert [row["config_id"] for row in made] == [sibling["id"]]
    assert await deliveries_of(db, config_id=stranger["id"]) == []
    assert await deliveries_of(db, config_id=about["id"]) == []


async def test_a_survey_event_still_goes_to_every_subscriber(db: Database, client_id: str) -> None:
    """The exclusion is about operational events only (their `source_config_id`)."""
    one = await new_config(db, client_id)
    two = await new_config(db, client_id)
    await add_event(db, client_id=client_id, event_type="survey_created", content={"id": "s"})

    while (await fan_out_batch(db, batch_size=100)).events:
        pass

    made = await deliveries_of(db, client_id=client_id, event_type="survey_created")
    assert sorted(row["config_id"] for row in made) == sorted([one["id"], two["id"]])


async def test_a_410_after_the_configuration_was_deleted_is_not_announced(
    db: Database, client_id: str
) -> None:
    config = await new_config(db, client_id)
    [claim] = await lifecycle.claim(db, [await new_delivery(db, config)], lease_s=LEASE_S)
    await configs.delete_config(db, client_id, config["id"])

    await _record(db, claim, status=Status.FAILED, health=Health.GONE, status_code=410)

    assert await _operational(db, client_id) == []
