"""`/healthz`, `/readyz` and `/metrics` (SPEC 10) through the app in-process: no auth,
JSON health either way, readiness that follows the database and the broker, and
Prometheus text whose gauges follow the database."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from commands.processes import redis_check
from core.clients import create_client
from outbox.fanout import fan_out_batch
from service.app import BrokerCheck, create_app
from tests.conftest import make_settings
from tests.servers import PG_ADMIN_URL, RedisServer, postgres_database

SPEC_NAMES = {
    "webhooks_deliveries_total",
    "webhooks_attempt_duration_seconds",
    "webhooks_outbox_pending",
    "webhooks_deliveries_pending",
    "webhooks_outbox_lag_seconds",
}


@asynccontextmanager
async def running(
    database_url: str, *, broker_check: BrokerCheck | None = None
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(make_settings(database_url), broker_check=broker_check)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


def _returns(answer: str) -> BrokerCheck:
    async def check() -> str:
        return answer

    return check


def _exposed(text: str) -> dict[str, float]:
    """Every sample without labels, and the family names (value 0) for the rest."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        values.setdefault(family.name, 0.0)
        for sample in family.samples:
            if not sample.labels:
                values[sample.name] = float(sample.value)
    return values


# --- /healthz and /readyz ---------------------------------------------------------------


async def test_healthz_answers_json_without_auth(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_the_database(api: httpx.AsyncClient) -> None:
    response = await api.get("/readyz")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok", "checks": {"database": "ok"}}


async def test_readyz_reports_a_broker_that_answers(database_url: str) -> None:
    async with running(database_url, broker_check=_returns("ok")) as (_, api):
        response = await api.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


async def test_readyz_is_503_json_when_the_broker_check_reports_an_error(
    database_url: str,
) -> None:
    async with running(database_url, broker_check=_returns("error: ConnectionError")) as (_, api):
        ready = await api.get("/readyz")
        alive = await api.get("/healthz")

    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/json"
    assert ready.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "broker": "error: ConnectionError"},
    }
    assert alive.status_code == 200


@pytest.mark.e2e
async def test_readyz_follows_a_real_redis_going_away(
    database_url: str, own_redis: RedisServer
) -> None:
    check = partial(redis_check, own_redis.url)
    async with running(database_url, broker_check=check) as (_, api):
        before = await api.get("/readyz")
        own_redis.stop()
        after = await api.get("/readyz")

    assert (before.status_code, before.json()["checks"]["broker"]) == (200, "ok")
    assert after.status_code == 503
    assert after.json()["checks"]["broker"].startswith("error: ")
    assert after.json()["checks"]["database"] == "ok"


async def test_readyz_is_503_json_when_the_sqlite_file_cannot_be_opened(tmp_path: Path) -> None:
    """SQLite connects lazily: the app starts, and readiness says the database is down."""
    unreachable = f"sqlite:///{tmp_path / 'no-such-directory' / 'webhooks.db'}"
    async with running(unreachable) as (_, api):
        ready = await api.get("/readyz")
        alive = await api.get("/healthz")

    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/json"
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"].startswith("error: ")
    assert alive.status_code == 200


def _drop(database_url: str) -> None:
    name = database_url.rsplit("/", 1)[1]
    subprocess.run(
        ["psql", PG_ADMIN_URL, "-q", "-c", f"DROP DATABASE {name} WITH (FORCE)"],
        check=True,
        capture_output=True,
    )


async def test_readyz_is_503_json_when_the_postgresql_database_goes_away() -> None:
    """A PostgreSQL pool connects at start-up (so a database that does not exist stops the
    app from starting, below); one that disappears while the app runs is a 503."""
    with postgres_database() as url:
        async with running(url) as (_, api):
            before = await api.get("/readyz")
            _drop(url)
            after = await api.get("/readyz")
            again = await api.get("/readyz")
            alive = await api.get("/healthz")

    assert before.status_code == 200
    for response in (after, again):
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert response.json()["status"] == "unavailable"
        assert response.json()["checks"]["database"].startswith("error: ")
    assert alive.status_code == 200


async def test_an_app_on_a_postgresql_database_that_does_not_exist_does_not_start() -> None:
    with postgres_database() as url:
        missing = url + "_missing"
        app = create_app(make_settings(missing))
        with pytest.raises(Exception, match="does not exist"):
            async with app.router.lifespan_context(app):
                pass


# --- /metrics ---------------------------------------------------------------------------


async def test_metrics_is_prometheus_text_with_the_spec_names_and_no_auth(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    names = {
        sample.name for f in text_string_to_metric_families(response.text) for sample in f.samples
    }
    assert {
        "webhooks_deliveries_total",
        "webhooks_attempt_duration_seconds_count",
        "webhooks_attempt_duration_seconds_bucket",
        "webhooks_outbox_pending",
        "webhooks_deliveries_pending",
        "webhooks_outbox_lag_seconds",
    } <= names
    outcomes = {
        sample.labels["outcome"]
        for f in text_string_to_metric_families(response.text)
        for sample in f.samples
        if sample.name == "webhooks_deliveries_total"
    }
    assert outcomes == {"delivered", "retry", "failed", "held"}


async def test_metrics_gauges_follow_surveys_and_the_fan_out(isolated_url: str) -> None:
    async with running(isolated_url) as (app, api):
        db = app.state.db
        created = await create_client(db, "metrics")
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        scrape: Callable[[], Awaitable[dict[str, float]]] = _scraper(api)
        config: dict[str, Any] = (
            await api.post(
                "/api/v2/config/webhook",
                json={"url": "https://hooks.example/in", "subscribed_events": ["survey_created"]},
                headers=headers,
            )
        ).json()
        assert "id" in config
        # Given two surveys whose events wait in the outbox
        for patient in ("p-1", "p-2"):
            response = await api.post(
                "/api/v2/surveys", json={"patient_id": patient}, headers=headers
            )
            assert response.status_code == 201
        waiting = await scrape()
        # When the poller fans them out
        await fan_out_batch(db, batch_size=100)
        fanned = await scrape()

    assert waiting["webhooks_outbox_pending"] == 2
    assert waiting["webhooks_outbox_lag_seconds"] > 0
    assert waiting["webhooks_deliveries_pending"] == 0
    assert fanned["webhooks_outbox_pending"] == 0
    assert fanned["webhooks_outbox_lag_seconds"] == 0
    assert fanned["webhooks_deliveries_pending"] == 2


def _scraper(api: httpx.AsyncClient) -> Callable[[], Awaitable[dict[str, float]]]:
    async def scrape() -> dict[str, float]:
        response = await api.get("/metrics")
        assert response.status_code == 200
        exposed = _exposed(response.text)
        assert {name.removesuffix("_total") for name in SPEC_NAMES} <= set(exposed)
        return exposed

    return scrape
