"""Prometheus metrics (SPEC 10). Counters and histograms live in the process that does the
work (the worker); `/metrics` on `web` serves them for its own process, for every process
of the host when `PROMETHEUS_MULTIPROC_DIR` is set (prometheus-client's multiprocess
mode), and adds gauges read from the database at scrape time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from core.database import Database, fetch_one
from core.lifecycle import Status
from core.tables import deliveries, outbox

DELIVERIES = Counter(
    "webhooks_deliveries",
    "Delivery attempts by outcome: delivered, retry (failed, will be retried), failed "
    "(no attempts left or target blocked), held (endpoint gone).",
    ["outcome"],
)
OUTCOMES = (Status.DELIVERED, "retry", Status.FAILED, Status.HELD)
for _outcome in OUTCOMES:  # a series for every outcome from the first scrape on
    DELIVERIES.labels(outcome=_outcome)

WAITING = Counter(
    "webhooks_deliveries_waiting",
    "Deliveries turned away unattempted by a delivery control, to come back later, by "
    "reason: rate_limited, max_in_flight, ordering.",
    ["reason"],
)
for _reason in ("rate_limited", "max_in_flight", "ordering"):
    WAITING.labels(reason=_reason)

ATTEMPT_DURATION = Histogram(
    "webhooks_attempt_duration_seconds",
    "Duration of one delivery attempt, from connect to the end of the response.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def _process_registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


async def _database_gauges(db: Database, now: datetime) -> bytes:
    outbox_pending = await _value(db, _OUTBOX_PENDING)
    oldest: datetime | None = await _value(db, _OLDEST_PENDING_EVENT)
    deliveries_pending = await _value(db, _DELIVERIES_PENDING)
    values = {
        "webhooks_outbox_pending": ("Events in the outbox not yet fanned out.", outbox_pending),
        "webhooks_deliveries_pending": ("Deliveries waiting for an attempt.", deliveries_pending),
        "webhooks_outbox_lag_seconds": (
            "Age of the oldest event not yet fanned out (0 when none).",
            _age_s(oldest, now),
        ),
    }
    registry = CollectorRegistry()
    registry.register(_Snapshot(values))
    return generate_latest(registry)


_OUTBOX_PENDING = (
    sa.select(sa.func.count().label("value"))
    .select_from(outbox)
    .where(outbox.c.dispatched_at.is_(None))
)
_OLDEST_PENDING_EVENT = sa.select(sa.func.min(outbox.c.created_at).label("value")).where(
    outbox.c.dispatched_at.is_(None)
)
_DELIVERIES_PENDING = (
    sa.select(sa.func.count().label("value"))
    .select_from(deliveries)
    .where(deliveries.c.status == Status.PENDING)
)


async def _value(db: Database, statement: sa.Select[Any]) -> Any:
    row = await fetch_one(db, statement)
    return None if row is None else row["value"]


class _Snapshot(Collector):
    """Gauges computed at scrape time. Not `Gauge` objects: in multiprocess mode those
    would be written to files and exposed a second time by every process."""

    def __init__(self, values: dict[str, tuple[str, float | None]]) -> None:
        self.values = values

    def collect(self) -> Iterator[Metric]:
        for name, (documentation, value) in self.values.items():
            yield GaugeMetricFamily(name, documentation, value=float(value or 0))


def _age_s(moment: datetime | str | None, now: datetime) -> float:
    if moment is None:
        return 0.0
    if isinstance(moment, str):  # SQLite's MIN() returns the stored text
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - moment).total_seconds())


async def exposition(db: Database, now: datetime) -> bytes:
    """The Prometheus text for `/metrics`."""
    return generate_latest(_process_registry()) + await _database_gauges(db, now)
