"""`python -m bench.portal`: how long the portal's pages take to load with many
deliveries in one configuration (SPEC 12; the target is under 100 ms a page).

A real `web` process (the Procfile's command) on a fresh database (SQLite in a
temporary directory, or a fresh PostgreSQL database with `--database-url`); the
deliveries (spread over the last 30 hours, mostly delivered, some failed, pending and
held, each with its attempts) are written straight into the database, as the pipeline
would have left them. Each page is then fetched over one keep-alive connection, after a
warm-up, and timed from the request to the last byte of the answer.

    .venv/bin/python -m bench.portal                        # 10,000 deliveries, SQLite
    .venv/bin/python -m bench.portal --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m bench.portal --deliveries 50000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.stack import (
    VENV_BIN,
    Child,
    free_port,
    fresh_postgres,
    procfile,
    running,
    temp_dir,
    wait_until,
    webhooks_cli,
)
from core.clock import utcnow
from core.database import Query, WriteUnit, open_database, run_in_transaction
from core.events import event_body
from core.lifecycle import DELIVERY_COLUMNS, delivery_row
from core.tables import attempts, deliveries

WARMUP = 3
STATUSES = [("delivered", 0.90), ("failed", 0.05), ("pending", 0.03), ("held", 0.02)]
# The columns of a new delivery (`core.lifecycle.delivery_row`), and those of its history.
_HISTORY = ("lease_expires_at", "last_attempt_at", "delivered_at")
_DELIVERY = deliveries.insert().values(
    {name: sa.bindparam(name) for name in (*DELIVERY_COLUMNS, *_HISTORY)}
)
_ATTEMPT = attempts.insert().values(
    {name: sa.bindparam(name) for name in (c.name for c in attempts.columns if c.name != "id")}
)


def _rows(config: dict[str, Any], client_id: str, count: int) -> tuple[list[Any], list[Any]]:
    now = utcnow()
    body = event_body("survey_created", {"id": str(uuid.uuid4()), "answers": {"q1": "yes"}})
    made, tried = [], []
    weights = [weight for _, weight in STATUSES]
    for n in range(count):
        status = random.choices([s for s, _ in STATUSES], weights)[0]
        created_at = now - timedelta(seconds=30 * 3600 * n / count)
        tries = {"delivered": random.choice((1, 1, 1, 2)), "failed": 4, "pending": 1}.get(status, 0)
        row = delivery_row(
            config_id=config["id"],
            client_id=client_id,
            event_id=str(uuid.uuid4()),
            event_type="survey_created",
            body=body,
            enabled=True,
            now=created_at,
            seq=None,
        )
        delivery_id = row["id"]
        made.append(
            {
                **row,
                "status": status,
                "attempt_count": tries,
                "next_attempt_at": now + timedelta(minutes=5) if status == "pending" else None,
                "lease_expires_at": None,
                "last_attempt_at": created_at + timedelta(seconds=tries) if tries else None,
                "delivered_at": created_at + timedelta(seconds=tries)
                if status == "delivered"
                else None,
            }
        )
        for number in range(1, tries + 1):
            ok = status == "delivered" and number == tries
            tried.append(
                {
                    "delivery_id": delivery_id,
                    "number": number,
                    "started_at": created_at + timedelta(seconds=number),
                    "duration_ms": random.randint(5, 400),
                    "status_code": 200 if ok else 503,
                    "error": None if ok else "http_status",
                    "response_body": "ok" if ok else "upstream unavailable",
                }
            )
    return made, tried


def _filling(made: list[dict[str, Any]], tried: list[dict[str, Any]]) -> WriteUnit[None]:
    yield Query.for_each(_DELIVERY, made)
    yield Query.for_each(_ATTEMPT, tried)


def _fill(database_url: str, config: dict[str, Any], client_id: str, count: int) -> None:
    made, tried = _rows(config, client_id, count)

    async def write() -> None:
        db = open_database(database_url)
        await db.connect()
        try:
            await run_in_transaction(db, _filling(made, tried))
        finally:
            await db.disconnect()

    asyncio.run(write())


@contextmanager
def _web(database_url: str, log_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "1",
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
    }
    webhooks_cli(env, "migrate")
    child = Child("web", ["bash", "-c", f"exec {procfile()['web']}"], env=env, log_dir=log_dir)
    with running(child):
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            child.check_alive()
            try:
                return httpx.get(base + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout_s=60, what="web to answer /healthz")
        yield base, env


def _time(browser: httpx.Client, path: str, requests: int) -> dict[str, Any]:
    for _ in range(WARMUP):
        browser.get(path)
    times, size = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        response = browser.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        size = len(response.content)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
        "max_ms": round(times[-1], 1),
        "kb": round(size / 1024, 1),
    }


def measure(database_url: str, log_dir: Path, *, count: int, requests: int) -> dict[str, Any]:
    with _web(database_url, log_dir) as (base, env):
        created = json.loads(webhooks_cli(env, "client", "create", "bench portal"))
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        with httpx.Client(base_url=base, timeout=30) as browser:
            config = browser.post(
                "/api/v2/config/webhook",
                json={
                    "url": "https://receiver.example/hook",
                    "subscribed_events": ["survey_created"],
                },
                headers=headers,
            ).json()
            _fill(database_url, config, created["id"], count)
            link = browser.post("/api/v2/portal/sessions", json={}, headers=headers).json()["url"]
            assert browser.get(link).status_code == 303
            one = f"/portal/configs/{config['id']}"
            listed = browser.get(one + "/deliveries?status=failed").text
            failed = listed.split('data-delivery-id="', 1)[1].split('"', 1)[0]
            first_page = browser.get(one + "/deliveries").text
            older = (
                first_page.split('rel="next" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
            )
            pages = {
                "endpoints /portal/": "/portal/",
                "endpoint (chart, recent)": one,
                "deliveries, first page": one + "/deliveries",
                "deliveries, status=failed": one + "/deliveries?status=failed",
                "deliveries, second page": one + "/deliveries" + older,
                "delivery (4 attempts)": f"/portal/deliveries/{failed}",
                "recover": one + "/recover",
                "event types": "/portal/event-types",
                "API reference page": "/api/v2/docs",
            }
            return {name: _time(browser, path, requests) for name, path in pages.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.portal", description=__doc__)
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
    parser.add_argument("--database-url", help="a PostgreSQL server (default: SQLite)")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args(argv)
    with ExitStack() as stack:
        work = stack.enter_context(temp_dir())
        url = f"sqlite:///{work / 'webhooks.db'}"
        if options.database_url:
            url = stack.enter_context(fresh_postgres(options.database_url))
        results = measure(url, work, count=options.deliveries, requests=options.requests)
    backend = "postgresql" if options.database_url else "sqlite"
    if options.json:
        print(json.dumps({"backend": backend, "deliveries": options.deliveries, "pages": results}))
        return 0
    print(
        f"{options.deliveries:,} deliveries in one configuration, {backend}, "
        f"{options.requests} requests a page after {WARMUP} to warm up"
    )
    print(f"{'page':32} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'KiB':>7}")
    for name, figures in results.items():
        print(
            f"{name:32} {figures['p50_ms']:8} {figures['p95_ms']:8} {figures['max_ms']:8} "
            f"{figures['kb']:7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
