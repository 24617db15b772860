"""Metrics (SPEC 10): the worker's counter and histogram, and the gauges read from the
database at scrape time (`core.metrics.exposition`), on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from freezegun import freeze_time
from prometheus_client import REGISTRY

from core.database import Database
from core.metrics import OUTCOMES, _age_s, exposition
from outbox.fanout import fan_out_batch
from outbox.writer import add_event
from tests.conftest import make_settings, metric_families
from tests.outbox.helpers import (
    new_client_id,
    new_config,
    new_delivery,
)
from tests.receivers import Script
from workers.delivery import Deliverer

T0 = datetime(2031, 5, 1, 9, 0, tzinfo=UTC)
SPEC_NAMES = {
    # the parser names a counter's family without `_total`
    "webhooks_deliveries": "counter",
    "webhooks_attempt_duration_seconds": "histogram",
    "webhooks_outbox_pending": "gauge",
    "webhooks_deliveries_pending": "gauge",
    "webhooks_outbox_lag_seconds": "gauge",
}


def gauge(families: dict[str, Any], name: str) -> float:
    [sample] = families[name].samples
    assert sample.labels == {}, sample
    return float(sample.value)


async def _events(db: Database, client_id: str, count: int) -> None:
    for number in range(count):
        async with db.transaction():
            await add_event(
                db, client_id=client_id, event_type="survey_created", content={"n": number}
            )


async def _scrape(db: Database, now: datetime) -> dict[str, Any]:
    return metric_families((await exposition(db, now)).decode())


# --- the names and types ----------------------------------------------------------------


async def test_the_exposition_has_every_spec_10_metric_once(idb: Database) -> None:
    families = await _scrape(idb, T0)

    for name, kind in SPEC_NAMES.items():
        assert families[name].type == kind, name
    counter = {s.labels["outcome"] for s in families["webhooks_deliveries"].samples}
    assert counter == set(OUTCOMES)
    histogram = {s.name for s in families["webhooks_attempt_duration_seconds"].samples}
    assert {
        "webhooks_attempt_duration_seconds_bucket",
        "webhooks_attempt_duration_seconds_count",
        "webhooks_attempt_duration_seconds_sum",
    } <= histogram


async def test_an_empty_database_reads_as_zero(idb: Database) -> None:
    families = await _scrape(idb, T0)

    assert gauge(families, "webhooks_outbox_pending") == 0
    assert gauge(families, "webhooks_deliveries_pending") == 0
    assert gauge(families, "webhooks_outbox_lag_seconds") == 0


# --- the gauges follow the database -----------------------------------------------------


async def test_the_gauges_follow_the_outbox_and_the_deliveries(idb: Database) -> None:
    # Given 3 undispatched events, the oldest written 90 s before the scrape
    db = idb
    client_id = await new_client_id(db)
    await new_config(db, client_id, events=["survey_created"])
    await new_config(db, client_id, events=["survey_created", "survey_finished"])
    await new_config(db, client_id, events=["survey_created"], enabled=False)
    with freeze_time(T0, real_asyncio=True) as clock:
        await _events(db, client_id, 1)
        clock.tick(30)
        await _events(db, client_id, 2)
    # Then the outbox gauges count them and age the oldest
    families = await _scrape(db, T0 + timedelta(seconds=90))
    assert gauge(families, "webhooks_outbox_pending") == 3
    assert gauge(families, "webhooks_outbox_lag_seconds") == pytest.approx(90, abs=0.01)
    assert gauge(families, "webhooks_deliveries_pending") == 0

    # When the poller fans them out (2 enabled configurations; the disabled one is held)
    fanout = await fan_out_batch(db, batch_size=100)
    assert (fanout.events, len(fanout.pending_ids), fanout.held) == (3, 6, 3)

    # Then the outbox is empty and its lag 0; only pending deliveries count
    families = await _scrape(db, T0 + timedelta(seconds=95))
    assert gauge(families, "webhooks_outbox_pending") == 0
    assert gauge(families, "webhooks_outbox_lag_seconds") == 0
    assert gauge(families, "webhooks_deliveries_pending") == 6


async def test_final_and_held_deliveries_are_not_pending(idb: Database) -> None:
    db = idb
    config = await new_config(db, await new_client_id(db))
    for status in ("pending", "pending", "delivered", "failed", "held", "cancelled"):
        await new_delivery(db, config, status=status)

    families = await _scrape(db, T0)

    assert gauge(families, "webhooks_deliveries_pending") == 2


async def test_the_lag_is_the_oldest_undispatched_event_not_the_oldest_event(
    idb: Database,
) -> None:
    db = idb
    client_id = await new_client_id(db)
    with freeze_time(T0, real_asyncio=True) as clock:
        await _events(db, client_id, 1)
        await fan_out_batch(db, batch_size=100)  # dispatched at T0
        clock.tick(600)
        await _events(db, client_id, 1)

    families = await _scrape(db, T0 + timedelta(seconds=660))

    assert gauge(families, "webhooks_outbox_lag_seconds") == pytest.approx(60, abs=0.01)
    assert gauge(families, "webhooks_outbox_pending") == 1


@pytest.mark.parametrize(
    ("moment", "age_s"),
    [
        (None, 0.0),
        (T0 - timedelta(seconds=42), 42.0),
        (T0 + timedelta(seconds=5), 0.0),  # a clock step back never reads as negative
        ((T0 - timedelta(minutes=2)).replace(tzinfo=None), 120.0),
        ("2031-05-01 08:59:30.250000", 29.75),  # SQLite's MIN() of stored text
    ],
)
def test_age_of_the_oldest_event(moment: datetime | str | None, age_s: float) -> None:
    assert _age_s(moment, T0) == pytest.approx(age_s)


# --- the worker's counter and histogram -------------------------------------------------


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_each_attempt_counts_its_outcome_and_its_duration(
    db: Database, database_url: str
) -> None:
    # Given a receiver that answers 200, 500 (retry), 500 on the last attempt, then 410
    receiver = Script([httpx.Response(status) for status in (200, 500, 500, 410)])
    config = await new_config(db, await new_client_id(db), url="https://hooks.example/in")
    settings = make_settings(database_url, WEBHOOKS_MAX_ATTEMPTS=3)
    before = {
        outcome: _sample("webhooks_deliveries_total", outcome=outcome) for outcome in OUTCOMES
    }
    count_before = _sample("webhooks_attempt_duration_seconds_count")
    async with httpx.MockTransport(receiver.handle) as http:
        deliverer = Deliverer(db=db, http=http, settings=settings)
        # When four deliveries are attempted (the third on its last attempt)
        await deliverer.deliver(await new_delivery(db, config))
        await deliverer.deliver(await new_delivery(db, config))
        await deliverer.deliver(await new_delivery(db, config, attempt_count=2))
        await deliverer.deliver(await new_delivery(db, config))

    # Then each outcome is counted once and every attempt is timed
    after = {outcome: _sample("webhooks_deliveries_total", outcome=outcome) for outcome in OUTCOMES}
    assert {outcome: after[outcome] - before[outcome] for outcome in OUTCOMES} == {
        "delivered": 1,
        "retry": 1,
        "failed": 1,
        "held": 1,
    }
    assert _sample("webhooks_attempt_duration_seconds_count") - count_before == 4


async def test_a_delivery_that_is_not_attempted_is_not_counted(
    db: Database, database_url: str
) -> None:
    config = await new_config(db, await new_client_id(db), url="https://hooks.example/in")
    delivery_id = await new_delivery(db, config, status="delivered")
    total_before = sum(_sample("webhooks_deliveries_total", outcome=o) for o in OUTCOMES)

    receiver = Script()

    async with httpx.MockTransport(receiver.handle) as http:
        deliverer = Deliverer(db=db, http=http, settings=make_settings(database_url))
        outcome = await deliverer.deliver(delivery_id)

    assert outcome.status is None
    assert receiver.requests == []  # a final delivery is not sent
    assert sum(_sample("webhooks_deliveries_total", outcome=o) for o in OUTCOMES) == total_before
