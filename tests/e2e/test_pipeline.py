"""The whole pipeline with real processes: the Procfile's web, poller and worker on
SQLite and on PostgreSQL with a real Redis, and `webhooks serve` alone; a real receiver
on 127.0.0.1 that verifies every signature with the official `standardwebhooks`."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from standardwebhooks import Webhook

from tests.e2e.harness import (
    Stack,
    attempts_of,
    create_survey,
    list_deliveries,
    make_config,
    procfile_stack,
    serve_stack,
    settled,
)
from tests.receivers import Receiver
from tests.servers import postgres_database

pytestmark = pytest.mark.e2e

TOPOLOGIES = ["procfile-sqlite", "procfile-postgresql", "serve-sqlite"]
BOTH_EVENTS = ["survey_created", "survey_finished"]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


@pytest.fixture(scope="module", params=TOPOLOGIES)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp(request.param)
    sqlite_url = f"sqlite:///{log_dir / 'webhooks.db'}"
    if request.param == "serve-sqlite":
        with serve_stack(sqlite_url, log_dir) as running:
            yield running
        return
    redis = request.getfixturevalue("redis")
    if request.param == "procfile-sqlite":
        with procfile_stack(sqlite_url, redis.url, log_dir) as running:
            yield running
        return
    with postgres_database() as pg_url, procfile_stack(pg_url, redis.url, log_dir) as running:
        yield running


def test_events_arrive_signed_and_audited(
    stack: Stack, api: httpx.Client, receiver: Receiver
) -> None:
    # Given a client with a configuration subscribed to both event types
    headers = stack.new_client()
    path = f"/ok/{stack.port}/signed"
    config = make_config(api, headers, receiver.url(path), BOTH_EVENTS)
    # When a survey is created and completed (and completing it again conflicts)
    survey = create_survey(api, headers)
    done = api.patch(
        f"/api/v2/surveys/{survey['id']}", json={"status": "completed"}, headers=headers
    )
    assert done.status_code == 200
    again = api.patch(
        f"/api/v2/surveys/{survey['id']}", json={"status": "completed"}, headers=headers
    )
    assert again.status_code == 409
    # Then the receiver gets exactly the two events, authenticated and signed
    items = settled(api, headers, config["id"], 2)
    got = receiver.wait(path, 2, timeout_s=10)
    assert sorted(item.json()["event_type"] for item in got) == [
        "survey_created",
        "survey_finished",
    ]
    webhook = Webhook(config["signing_secret"])
    for item in got:
        assert item.headers["x-webhook-infermedica-token"] == config["authorization_token"]
        assert item.headers["content-type"] == "application/json"
        assert "webhooks" in item.headers["user-agent"]
        assert webhook.verify(item.body, item.headers) == item.json()
        assert set(item.json()) == {"event_type", "content"}
    finished = next(item for item in got if item.json()["event_type"] == "survey_finished")
    assert finished.json()["content"] == done.json()
    assert {item["status"] for item in items} == {"delivered"}
    assert {item.webhook_id for item in got} == {item["id"] for item in items}


def test_flaky_receiver_is_delivered_on_the_third_attempt(
    stack: Stack, api: httpx.Client, receiver: Receiver
) -> None:
    headers = stack.new_client()
    path = f"/flaky/2/{stack.port}"
    config = make_config(api, headers, receiver.url(path), ["survey_created"])
    create_survey(api, headers)
    [item] = settled(api, headers, config["id"], 1)
    assert item["status"] == "delivered"
    assert item["attempt_count"] == 3
    attempts = attempts_of(api, headers, config["id"], item["id"])
    assert [a["number"] for a in attempts] == [1, 2, 3]
    assert [a["status_code"] for a in attempts] == [500, 500, 200]
    assert [a["error"] for a in attempts] == ["http_status", "http_status", None]
    assert len({r.webhook_id for r in receiver.at(path)}) == 1


def test_dead_receiver_fails_after_the_attempts_with_growing_gaps(
    stack: Stack, api: httpx.Client, receiver: Receiver
) -> None:
    headers = stack.new_client()
    path = f"/dead/{stack.port}"
    config = make_config(api, headers, receiver.url(path), ["survey_created"])
    create_survey(api, headers)
    [item] = settled(api, headers, config["id"], 1)
    assert item["status"] == "failed"
    assert item["attempt_count"] == 4  # WEBHOOKS_MAX_ATTEMPTS in the stack
    attempts = attempts_of(api, headers, config["id"], item["id"])
    starts = [datetime.fromisoformat(a["started_at"]) for a in attempts]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    # 200 ms * 4**(n-1), +-20%: about 0.2, 0.8, 2.0 (capped) seconds
    assert gaps[0] >= 0.15 and gaps[1] > gaps[0] and gaps[2] > gaps[1], gaps
    assert len(receiver.at(path)) == 4


def test_redeliver_sends_a_failed_delivery_again(
    stack: Stack, api: httpx.Client, receiver: Receiver
) -> None:
    headers = stack.new_client()
    path = f"/status/{stack.port}/redeliver"
    receiver.statuses[path] = 503
    config = make_config(api, headers, receiver.url(path), ["survey_created"])
    create_survey(api, headers)
    [item] = settled(api, headers, config["id"], 1)
    assert item["status"] == "failed"
    receiver.statuses[path] = 204
    response = api.post(
        f"/api/v2/config/webhook/{config['id']}/deliveries/{item['id']}/redeliver", headers=headers
    )
    assert response.status_code == 202
    [again] = settled(api, headers, config["id"], 1)
    assert again["status"] == "delivered"
    assert again["attempt_count"] == 5
    assert {r.webhook_id for r in receiver.at(path)} == {item["id"]}


def test_a_second_client_never_sees_the_first_clients_events(
    stack: Stack, api: httpx.Client, receiver: Receiver
) -> None:
    first, second = stack.new_client("first"), stack.new_client("second")
    first_path, second_path = f"/ok/{stack.port}/first", f"/ok/{stack.port}/second"
    first_config = make_config(api, first, receiver.url(first_path), BOTH_EVENTS)
    second_config = make_config(api, second, receiver.url(second_path), BOTH_EVENTS)
    survey = create_survey(api, first)
    settled(api, first, first_config["id"], 1)
    assert api.get(f"/api/v2/surveys/{survey['id']}", headers=second).status_code == 404
    assert list_deliveries(api, second, second_config["id"]) == []
    listing = api.get(f"/api/v2/config/webhook/{first_config['id']}/deliveries", headers=second)
    assert listing.status_code == 404
    assert receiver.at(second_path) == []
    assert len(receiver.at(first_path)) == 1
