"""Endpoint health over time (SPEC 9), with the clock moved by freezegun: a configuration
whose deliveries have all failed for `WEBHOOKS_DISABLE_AFTER_S` (default 5 days) is
disabled as `failing`; a shorter streak, or one that a success interrupts, is not; re-enabling
starts a new streak. Attempts go through the `Deliverer` to an `httpx.MockTransport`
receiver, on both backends. (`test_delivery.py` covers 410 and the rule without a clock.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from freezegun.api import FrozenDateTimeFactory
from standardwebhooks import Webhook

from core import configs, lifecycle
from core.database import Database, WriteUnit, record_dict
from core.lifecycle import Status
from core.settings import DEFAULT_DISABLE_AFTER_S
from core.tables import webhook_configs
from outbox import fanout
from outbox.writer import add_event
from service.schemas import config_view
from tests.conftest import make_settings
from tests.outbox.helpers import (
    connected,
    deliveries_of,
    delivery,
    meanwhile_in_unit,
    new_client_id,
    new_config,
    new_delivery,
)
from tests.receivers import Script
from workers.delivery import Deliverer

T0 = datetime(2032, 1, 10, 6, 0, tzinfo=UTC)
DAY = timedelta(days=1)
DISABLE_AFTER = timedelta(seconds=DEFAULT_DISABLE_AFTER_S)


@pytest.fixture
def clock_start() -> datetime:
    return T0


@pytest.fixture
def endpoint() -> Script:
    """Answers 500 until a test gives it other `replies`."""
    return Script([httpx.Response(500, text="answer")])


@pytest.fixture
async def deliverer(db: Database, database_url: str, endpoint: Script) -> AsyncIterator[Deliverer]:
    """The default WEBHOOKS_DISABLE_AFTER_S, and attempts enough never to run out."""
    settings = make_settings(database_url, WEBHOOKS_MAX_ATTEMPTS=100)
    assert settings.disable_after_s == 5 * 24 * 3600
    async with httpx.MockTransport(endpoint.handle) as http:
        yield Deliverer(db=db, http=http, settings=settings)


@pytest.fixture
async def config(db: Database, clock: FrozenDateTimeFactory) -> dict[str, Any]:
    return await new_config(db, await new_client_id(db), url="https://hooks.example/in")


async def _stored(db: Database, config_id: str) -> dict[str, Any]:
    row = await db.fetch_one(sa.select(webhook_configs).where(webhook_configs.c.id == config_id))
    assert row is not None
    return record_dict(row)


async def _attempt_at(
    db: Database,
    deliverer: Deliverer,
    config: dict[str, Any],
    clock: FrozenDateTimeFactory,
    at: datetime,
) -> Status | None:
    """Move the clock to `at` and attempt a new delivery to `config` there."""
    clock.move_to(at)
    delivery_id = await new_delivery(db, config)
    return (await deliverer.deliver(delivery_id)).status


async def test_failing_for_less_than_disable_after_keeps_it_enabled(
    db: Database,
    deliverer: Deliverer,
    config: dict[str, Any],
    clock: FrozenDateTimeFactory,
) -> None:
    # Given failures on day 0, day 2 and one second short of day 5
    for at in (T0, T0 + 2 * DAY, T0 + DISABLE_AFTER - timedelta(seconds=1)):
        assert await _attempt_at(db, deliverer, config, clock, at) == Status.PENDING

    # Then the streak started with the first failure and the configuration is enabled
    stored = await _stored(db, config["id"])
    assert (stored["enabled"], stored["disabled_reason"]) == (True, None)
    assert stored["failing_since"] == T0


async def test_failing_for_disable_after_disables_it_as_failing(
    db: Database,
    deliverer: Deliverer,
    config: dict[str, Any],
    clock: FrozenDateTimeFactory,
    endpoint: Script,
) -> None:
    # Given a streak that began at T0
    await _attempt_at(db, deliverer, config, clock, T0)
    # When a failure comes exactly WEBHOOKS_DISABLE_AFTER_S later
    await _attempt_at(db, deliverer, config, clock, T0 + DISABLE_AFTER)

    # Then the configuration is disabled as failing, as every response shows it
    stored = await _stored(db, config["id"])
    assert (stored["enabled"], stored["disabled_reason"]) == (False, "failing")
    view = config_view(stored)
    assert (view["enabled"], view["disabled_reason"]) == (False, "failing")
    # and the next delivery is held without a request
    requests = len(endpoint.requests)
    assert await _attempt_at(db, deliverer, config, clock, T0 + DISABLE_AFTER + DAY) == Status.HELD
    assert len(endpoint.requests) == requests


async def test_timeouts_and_connection_errors_count_as_failing(
    db: Database,
    deliverer: Deliverer,
    config: dict[str, Any],
    clock: FrozenDateTimeFactory,
    endpoint: Script,
) -> None:
    endpoint.replies = [httpx.ConnectError("refused")]
    await _attempt_at(db, deliverer, config, clock, T0)
    endpoint.replies = [httpx.ReadTimeout("slow")]
    await _attempt_at(db, deliverer, config, clock, T0 + 6 * DAY)

    stored = await _stored(db, config["id"])
    assert (stored["enabled"], stored["disabled_reason"]) == (False, "failing")


async def test_a_success_in_between_resets_the_streak(
    db: Database,
    deliverer: Deliverer,
    config: dict[str, Any],
    clock: FrozenDateTimeFactory,
    endpoint: Script,
) -> None:
    # Given a streak from day 0, broken by a success on day 3
    await _attempt_at(db, deliverer, config, clock, T0)
    endpoint.replies = [httpx.Response(204)]
    assert await _attempt_at(db, deliverer, config, clock, T0 + 3 * DAY) == Status.DELIVERED
    assert (await _stored(db, config["id"]))["failing_since"] is None
    # When failures resume on day 4 and go on until day 8 (8 days after the first failure)
    endpoint.replies = [httpx.Response(503)]
    await _attempt_at(db, deliverer, config, clock, T0 + 4 * DAY)
    await _attempt_at(db, deliverer, config, clock, T0 + 8 * DAY)

    # Then the new streak is 4 days long and the configuration is still enabled
    stored = await _stored(db, config["id"])
    assert (stored["enabled"], stored["failing_since"]) == (True, T0 + 4 * DAY)
    # until it reaches 5 days
    await _attempt_at(db, deliverer, config, clock, T0 + 9 * DAY)
    assert (await _stored(db, config["id"]))["disabled_reason"] == "failing"


async def test_a_410_disables_as_gone_whatever_the_streak(
    db: Database,
    deliverer: Deliverer,
    config: dict[str, Any],
    clock: FrozenDateTimeFactory,
    endpoint: Script,
) -> None:
    await _attempt_at(db, deliverer, config, clock, T0)
    endpoint.replies = [httpx.Response(410)]

    assert await _attempt_at(db, deliverer, config, clock, T0 + timedelta(minutes=1)) == (
        Status.HELD
    )

    stored = await _stored(db, config["id"])
    assert (stored["enabled"], stored["disabled_reason"]) == (False, "gone")


async def test_re_enabling_starts_a_new_streak(
    db: Database,
    deliverer: Deliverer,
    config: dict[str, Any],
    clock: FrozenDateTimeFactory,
) -> None:
    # Given a configuration disabled after 5 days of failures, with a held delivery
    await _attempt_at(db, deliverer, config, clock, T0)
    await _attempt_at(db, deliverer, config, clock, T0 + DISABLE_AFTER)
    held = await new_delivery(db, config)
    assert (await deliverer.deliver(held)).status == Status.HELD
    # When the client re-enables it a day later
    clock.move_to(T0 + DISABLE_AFTER + DAY)
    row, released = await configs.update_config(
        db, config["client_id"], config["id"], {"enabled": True}
    )
    assert row is not None and released == [held]
    assert (row["enabled"], row["disabled_reason"], row["failing_since"]) == (True, None, None)
    # Then the next failure starts a new streak instead of disabling it again at once
    assert (await deliverer.deliver(held)).status == Status.PENDING
    stored = await _stored(db, config["id"])
    assert (stored["enabled"], stored["failing_since"]) == (True, T0 + DISABLE_AFTER + DAY)
    assert (await delivery(db, held))["status"] == "pending"


# --- re-enabling while a delivery is being held -----------------------------------------
# `PATCH {"enabled": true}` releases the deliveries that are `held` when it commits. A
# delivery that becomes `held` from a read of the configuration made before that commit
# is never released: nothing sends a held delivery (the sweep looks at pending ones).


async def test_re_enabling_while_a_worker_holds_a_delivery_does_not_strand_it(
    db: Database,
    deliverer: Deliverer,
    config: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a disabled configuration with a delivery that was pending when it was disabled
    await disable(db, config["id"])
    delivery_id = await new_delivery(db, config)
    released: list[str] = []
    park = lifecycle.park

    async def re_enabled_meanwhile(database: Database, claim: lifecycle.Claim) -> Status | None:
        # The worker has claimed it and read "disabled"; the client re-enables now.
        row, ids = await configs.update_config(
            db, config["client_id"], config["id"], {"enabled": True}
        )
        assert row is not None
        released.extend(ids)
        return await park(database, claim)

    monkeypatch.setattr(lifecycle, "park", re_enabled_meanwhile)

    # When the worker holds the delivery just after the client re-enabled the configuration
    await deliverer.deliver(delivery_id)

    # Then the delivery will still be sent: it is not held under an enabled configuration
    assert (await _stored(db, config["id"]))["enabled"] is True
    row = await delivery(db, delivery_id)
    assert row["status"] != "held", (
        "held after the re-enable released the held deliveries: it is never sent"
    )


async def test_re_enabling_during_a_fan_out_does_not_strand_its_held_deliveries(
    isolated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a disabled configuration and an event for it in the outbox
    db = await connected(isolated_url)
    other = await connected(isolated_url)
    try:
        client_id = await new_client_id(db)
        config = await new_config(db, client_id, events=["survey_created"])
        await disable(db, config["id"])
        async with db.transaction():
            event_id = await add_event(
                db, client_id=client_id, event_type="survey_created", content={}
            )
        read_subscribers = fanout._subscribers
        patches: list[asyncio.Task[Any]] = []

        async def re_enable() -> None:
            # The fan-out has read "disabled"; the client re-enables on another connection.
            patch = asyncio.create_task(
                configs.update_config(other, client_id, config["id"], {"enabled": True})
            )
            patches.append(patch)
            # It commits now, or waits for the fan-out's transaction and commits after it.
            await asyncio.wait({patch}, timeout=1.0)

        loop = asyncio.get_running_loop()

        def re_enabled_meanwhile(client_ids: set[str]) -> WriteUnit[Any]:
            subscribers = yield from read_subscribers(client_ids)
            yield from meanwhile_in_unit(loop, db.url.dialect, re_enable)
            return subscribers

        monkeypatch.setattr(fanout, "_subscribers", re_enabled_meanwhile)

        # When the fan-out commits and the re-enable completes
        await fanout.fan_out_batch(db, batch_size=100)
        [patch] = patches
        row, _ = await patch

        # Then the event's delivery is not held under an enabled configuration
        assert row is not None and row["enabled"] is True
        [made] = await deliveries_of(db, event_id=event_id)
        assert made["status"] != "held", (
            "held by a fan-out that read the configuration before the re-enable committed"
        )
    finally:
        await other.disconnect()
        await db.disconnect()


async def disable(db: Database, config_id: str) -> None:
    await db.execute(
        webhook_configs.update()
        .where(webhook_configs.c.id == config_id)
        .values(enabled=False, disabled_reason="failing")
    )


async def test_a_410_is_announced_to_a_sibling_signed_like_any_event(
    db: Database,
    deliverer: Deliverer,
    config: dict[str, Any],
    clock: FrozenDateTimeFactory,
    endpoint: Script,
) -> None:
    """SPEC 15 end to end in one process: the worker's record writes `webhook_disabled`,
    the fan-out sends it to the client's other subscribed configuration only, and the
    request verifies with that configuration's secret."""
    sibling = await new_config(
        db, config["client_id"], events=["webhook_disabled"], url="https://sibling.example/in"
    )
    endpoint.by_host = {
        "hooks.example": httpx.Response(410),
        "sibling.example": httpx.Response(204),
    }
    await _attempt_at(db, deliverer, config, clock, T0)

    while (await fanout.fan_out_batch(db, batch_size=100)).events:  # earlier tests' too
        pass
    [made] = await deliveries_of(db, config_id=sibling["id"])
    assert (await deliverer.deliver(made["id"])).status == Status.DELIVERED

    request = endpoint.requests[-1]
    assert request.url.host == "sibling.example"
    body = Webhook(sibling["signing_secret"]).verify(request.content, dict(request.headers))
    assert body["event_type"] == "webhook_disabled"
    assert body["content"]["config_id"] == config["id"]
    assert body["content"]["disabled_reason"] == "gone"
    assert await deliveries_of(db, config_id=config["id"], event_type="webhook_disabled") == []
