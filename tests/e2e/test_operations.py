"""Operations with real processes (SPEC 8 recover and ping, 9, 10): endpoint health,
recovery, pings, health checks, metrics and logs, against a recording receiver.

Two stacks serve the module: `webhooks --log-format json serve` on SQLite (its whole log
is checked at the end: JSON lines, ids on delivery lines, no secret of this module), and
the Procfile's processes on PostgreSQL with the session's Redis, sharing a
`PROMETHEUS_MULTIPROC_DIR` as the README says to."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.conftest import metric_families
from tests.e2e import harness
from tests.e2e.harness import (
    CONFIGS,
    Stack,
    create_survey,
    list_deliveries,
    procfile,
    procfile_stack,
    serve_stack,
    settled,
    stack_env,
)
from tests.receivers import Receiver
from tests.servers import RedisServer, free_port, postgres_database, wait_for

pytestmark = pytest.mark.e2e

MAX_ATTEMPTS = 3
EXTRA_ENV = {"WEBHOOKS_MAX_ATTEMPTS": str(MAX_ATTEMPTS)}
SETTLE_TIMEOUT_S = 30.0


class Secrets:
    """Every API key, token and signing secret this module made: none may be logged."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def client(self, stack: Stack, name: str = "ops") -> dict[str, str]:
        headers = stack.new_client(name)
        self.values.add(headers["Authorization"].removeprefix("Bearer "))
        return headers

    def config(self, config: dict[str, Any]) -> dict[str, Any]:
        for key in ("authorization_token", "signing_secret"):
            if key in config:
                self.add_secret(config[key])
        return config

    def add_secret(self, value: str) -> None:
        self.values.add(value)
        if value.startswith("whsec_"):
            self.values.add(value.removeprefix("whsec_"))  # the key itself, base64


@pytest.fixture(scope="module")
def secrets() -> Secrets:
    return Secrets()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("ops-serve")
    url = f"sqlite:///{log_dir / 'webhooks.db'}"
    with serve_stack(url, log_dir, log_format="json", **EXTRA_ENV) as stack:
        yield stack


@pytest.fixture(scope="module")
def multiproc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prometheus-multiproc")


@pytest.fixture(scope="module")
def procfile_pg(
    tmp_path_factory: pytest.TempPathFactory, redis: RedisServer, multiproc_dir: Path
) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("ops-procfile")
    extra = {**EXTRA_ENV, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    with postgres_database() as url, procfile_stack(url, redis.url, log_dir, **extra) as stack:
        yield stack


@pytest.fixture(params=["serve", "procfile_pg"])
def stack(request: pytest.FixtureRequest) -> Stack:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


# -- helpers --------------------------------------------------------------------------


def make_config(
    api: httpx.Client,
    headers: dict[str, str],
    secrets: Secrets,
    url: str,
    events: list[str] | None = None,
) -> dict[str, Any]:
    """`harness.make_config`, its token and signing secret kept in `secrets`."""
    return secrets.config(harness.make_config(api, headers, url, events))


def get_config(api: httpx.Client, headers: dict[str, str], config_id: str) -> dict[str, Any]:
    response = api.get(f"{CONFIGS}/{config_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def received_ids(receiver: Receiver, path: str) -> list[str]:
    return [item.webhook_id for item in receiver.at(path)]


def sample(found: dict[str, Any], family: str, name: str, **labels: str) -> float:
    values = [s.value for s in found[family].samples if s.name == name and s.labels == labels]
    assert len(values) == 1, (name, labels, found[family].samples)
    return float(values[0])


# -- endpoint health (SPEC 9) ------------------------------------------------------------


def test_a_410_disables_holds_and_re_enabling_sends_every_held_delivery(
    stack: Stack, api: httpx.Client, receiver: Receiver, secrets: Secrets
) -> None:
    # Given a configuration whose receiver answers 410 Gone
    headers = secrets.client(stack)
    path = f"/status/{stack.port}/gone"
    receiver.statuses[path] = 410
    config = make_config(api, headers, secrets, receiver.url(path))
    assert (config["enabled"], "disabled_reason" in config) == (True, False)

    # When an event is delivered to it
    create_survey(api, headers, "first")
    [first] = settled(api, headers, config["id"], 1, status="held")

    # Then the configuration is disabled at once as gone, and the delivery is held
    shown = get_config(api, headers, config["id"])
    assert (shown["enabled"], shown["disabled_reason"]) == (False, "gone")
    listed = api.get(CONFIGS, headers=headers).json()
    assert [(c["enabled"], c["disabled_reason"]) for c in listed] == [(False, "gone")]
    assert (first["attempt_count"], received_ids(receiver, path)) == (1, [first["id"]])

    # When more events happen while it is disabled
    create_survey(api, headers, "second")
    create_survey(api, headers, "third")
    held = settled(api, headers, config["id"], 3, status="held")
    _pass_a_later_event(stack, api, receiver, secrets)

    # Then they are held too: recorded, nothing sent
    assert all(item["status"] == "held" for item in list_deliveries(api, headers, config["id"]))
    assert received_ids(receiver, path) == [first["id"]]
    assert {item["attempt_count"] for item in held if item["id"] != first["id"]} == {0}

    # When the receiver is back and the client re-enables the configuration
    receiver.statuses[path] = 200
    response = api.patch(f"{CONFIGS}/{config['id']}", json={"enabled": True}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is True
    assert "disabled_reason" not in response.json()

    # Then every held delivery is sent and delivered, each received once more
    done = settled(api, headers, config["id"], 3, status="delivered")
    after = received_ids(receiver, path)[1:]
    assert sorted(after) == sorted(item["id"] for item in done)
    shown = get_config(api, headers, config["id"])
    assert shown["enabled"] is True and "disabled_reason" not in shown
    _pass_a_later_event(stack, api, receiver, secrets)
    assert len(received_ids(receiver, path)) == 4


def _pass_a_later_event(
    stack: Stack, api: httpx.Client, receiver: Receiver, secrets: Secrets
) -> None:
    """Wait until an event made now (by another client) has reached the receiver: the
    poller and the worker are then past everything that was due before it, so a request
    that should not have been sent would have been by now."""
    headers = secrets.client(stack, "later")
    path = f"/ok/{stack.port}/later-{uuid.uuid4().hex[:8]}"
    make_config(api, headers, secrets, receiver.url(path))
    create_survey(api, headers, "later")
    receiver.wait(path, timeout_s=SETTLE_TIMEOUT_S)


# -- ping and recover (SPEC 8) -----------------------------------------------------------


def test_ping_sends_a_signed_ping_event_whatever_the_subscription(
    stack: Stack, api: httpx.Client, receiver: Receiver, secrets: Secrets
) -> None:
    headers = secrets.client(stack)
    path = f"/ok/{stack.port}/ping"
    config = make_config(api, headers, secrets, receiver.url(path), ["survey_finished"])
    before = datetime.now(UTC) - timedelta(seconds=1)

    response = api.post(f"{CONFIGS}/{config['id']}/ping", headers=headers)

    assert response.status_code == 202, response.text
    assert set(response.json()) == {"delivery_id"}
    delivery_id = response.json()["delivery_id"]
    [got] = receiver.wait(path, timeout_s=SETTLE_TIMEOUT_S)
    assert got.webhook_id == delivery_id
    assert got.headers["x-webhook-infermedica-token"] == config["authorization_token"]
    event = Webhook(config["signing_secret"]).verify(got.body, got.headers)
    assert event["event_type"] == "ping"
    assert event["content"]["config_id"] == config["id"]
    assert any(
        isinstance(value, str) and _is_recent_time(value, before)
        for value in event["content"].values()
    ), event
    [item] = settled(api, headers, config["id"], 1, status="delivered")
    assert (item["id"], item["event_type"]) == (delivery_id, "ping")


def _is_recent_time(text: str, since: datetime) -> bool:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return False
    return moment.tzinfo is not None and since <= moment <= datetime.now(UTC)


def test_recover_sends_the_failed_deliveries_of_a_window_again(
    stack: Stack, api: httpx.Client, receiver: Receiver, secrets: Secrets
) -> None:
    # Given a receiver that is down until every attempt of three deliveries has failed
    headers = secrets.client(stack)
    path = f"/status/{stack.port}/recover"
    receiver.statuses[path] = 500
    config = make_config(api, headers, secrets, receiver.url(path))
    before = datetime.now(UTC) - timedelta(seconds=1)
    for patient in ("a", "b", "c"):
        create_survey(api, headers, patient)
    failed = settled(api, headers, config["id"], 3, status="failed")
    assert {item["attempt_count"] for item in failed} == {MAX_ATTEMPTS}
    assert len(receiver.at(path)) == 3 * MAX_ATTEMPTS

    # When it has recovered and the client asks for the failed ones since `before`
    receiver.statuses[path] = 200
    nothing = api.post(
        f"{CONFIGS}/{config['id']}/recover",
        json={"since": before.isoformat(), "until": before.isoformat()},
        headers=headers,
    )
    assert (nothing.status_code, nothing.json()) == (202, {"redelivered": 0})
    response = api.post(
        f"{CONFIGS}/{config['id']}/recover", json={"since": before.isoformat()}, headers=headers
    )

    # Then every one of them is sent again, with its own webhook-id, and delivered
    assert response.status_code == 202, response.text
    assert response.json() == {"redelivered": len(failed)}
    done = settled(api, headers, config["id"], 3, status="delivered")
    assert {item["attempt_count"] for item in done} == {MAX_ATTEMPTS + 1}
    ok = [item.webhook_id for item in receiver.at(path)[3 * MAX_ATTEMPTS :]]
    assert sorted(ok) == sorted(item["id"] for item in failed)
    again = api.post(
        f"{CONFIGS}/{config['id']}/recover", json={"since": before.isoformat()}, headers=headers
    )
    assert again.json() == {"redelivered": 0}


# -- health checks (SPEC 10) -------------------------------------------------------------


def test_healthz_and_readyz_answer_json_without_auth(serve: Stack, procfile_pg: Stack) -> None:
    for running in (serve, procfile_pg):
        alive = httpx.get(running.base_url + "/healthz", timeout=5)
        assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
        ready = httpx.get(running.base_url + "/readyz", timeout=5)
        assert ready.status_code == 200
        assert ready.headers["content-type"] == "application/json"
    serve_ready = httpx.get(serve.base_url + "/readyz", timeout=5).json()
    assert serve_ready == {"status": "ok", "checks": {"database": "ok"}}
    procfile_ready = httpx.get(procfile_pg.base_url + "/readyz", timeout=5).json()
    assert procfile_ready == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_is_503_json_while_redis_is_down(tmp_path: Path, own_redis: RedisServer) -> None:
    # Given the Procfile's web on its own Redis
    port = free_port()
    env = stack_env(f"sqlite:///{tmp_path / 'webhooks.db'}", own_redis.url, port)
    web = Stack(env, tmp_path, port)
    try:
        web.start("web", procfile()["web"])
        web.wait_ready()
        assert httpx.get(web.base_url + "/readyz", timeout=5).status_code == 200
        # When Redis stops
        own_redis.stop()
        down = httpx.get(web.base_url + "/readyz", timeout=10)
        alive = httpx.get(web.base_url + "/healthz", timeout=5)
        # Then web is alive but not ready, and says why, in JSON
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/json"
        assert down.json()["status"] == "unavailable"
        assert down.json()["checks"]["database"] == "ok"
        assert down.json()["checks"]["broker"].startswith("error: ")
        assert alive.status_code == 200
        # and ready again once Redis is back
        own_redis.start()
        wait_for(
            lambda: httpx.get(web.base_url + "/readyz", timeout=5).status_code == 200,
            timeout_s=10,
            what="readyz after Redis is back",
        )
    finally:
        web.stop()


# -- metrics (SPEC 10) -------------------------------------------------------------------


def _deliver_some(
    stack: Stack, api: httpx.Client, receiver: Receiver, secrets: Secrets, count: int
) -> None:
    headers = secrets.client(stack)
    config = make_config(api, headers, secrets, receiver.url(f"/ok/{stack.port}/metrics"))
    for number in range(count):
        create_survey(api, headers, f"m-{number}")
    settled(api, headers, config["id"], count, status="delivered")


def _check_exposition(text: str, *, delivered_at_least: int) -> None:
    found = metric_families(text)
    assert sample(
        found, "webhooks_deliveries", "webhooks_deliveries_total", outcome="delivered"
    ) >= (delivered_at_least)
    histogram = "webhooks_attempt_duration_seconds"
    assert sample(found, histogram, histogram + "_count") >= delivered_at_least
    assert sample(found, histogram, histogram + "_sum") > 0
    for gauge in (
        "webhooks_outbox_pending",
        "webhooks_deliveries_pending",
        "webhooks_outbox_lag_seconds",
    ):
        assert found[gauge].type == "gauge"
        assert sample(found, gauge, gauge) >= 0


def test_metrics_of_webhooks_serve_count_the_deliveries(
    serve: Stack, receiver: Receiver, secrets: Secrets
) -> None:
    with serve.api() as api:
        _deliver_some(serve, api, receiver, secrets, 3)
        response = api.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    _check_exposition(response.text, delivered_at_least=3)


def test_metrics_of_web_include_the_workers_counters_in_multiprocess_mode(
    procfile_pg: Stack, receiver: Receiver, secrets: Secrets, multiproc_dir: Path
) -> None:
    """README: with PROMETHEUS_MULTIPROC_DIR shared by every process, `web` serves the
    worker's counters, and the database gauges once each."""
    with procfile_pg.api() as api:
        _deliver_some(procfile_pg, api, receiver, secrets, 2)
        api.get("/metrics")  # a second scrape must not add series either
        response = api.get("/metrics")

    assert response.status_code == 200
    _check_exposition(response.text, delivered_at_least=2)


# -- logs (SPEC 10) ----------------------------------------------------------------------


def test_json_logs_carry_the_ids_and_never_a_secret(
    serve: Stack, receiver: Receiver, secrets: Secrets
) -> None:
    # Given deliveries of every kind on the JSON-logging serve (and the tests above)
    with serve.api() as api:
        headers = secrets.client(serve, "logs")
        config = make_config(
            api,
            headers,
            secrets,
            receiver.url(f"/flaky/1/{serve.port}/logs"),
            ["survey_created", "survey_finished"],
        )
        rotated = api.post(f"{CONFIGS}/{config['id']}/secret/rotate", headers=headers)
        secrets.add_secret(rotated.json()["signing_secret"])
        new_token = "log-test-token-" + "z" * 20
        secrets.add_secret(new_token)
        patched = api.patch(
            f"{CONFIGS}/{config['id']}", json={"authorization_token": new_token}, headers=headers
        )
        assert patched.status_code == 200
        survey = create_survey(api, headers, "logs")
        api.patch(f"/api/v2/surveys/{survey['id']}", json={"status": "completed"}, headers=headers)
        assert api.post(f"{CONFIGS}/{config['id']}/ping", headers=headers).status_code == 202
        items = settled(api, headers, config["id"], 3, status="delivered")
        api.get(CONFIGS, headers={"Authorization": "Bearer not-a-key-" + new_token})
    # The worker logs an attempt after recording it: wait for the last attempts' lines.
    # (What a request logs is in the file by the time it is answered.)
    log = wait_for(
        lambda: _logged_attempts(serve, items, 2),
        timeout_s=SETTLE_TIMEOUT_S,
        what="two attempt lines of each delivery in the log",
    )

    # Then every line of the log is one JSON object
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines
    parsed: list[dict[str, Any]] = []
    for text in lines:
        try:
            value = json.loads(text)
        except ValueError:
            pytest.fail(f"not a JSON line: {text!r}")
        assert isinstance(value, dict), text
        parsed.append(value)
    # and every delivery line names its delivery and event
    delivery_lines = [entry for entry in parsed if entry.get("logger") == "webhooks.worker"]
    assert delivery_lines
    for entry in delivery_lines:
        assert entry.get("delivery_id") and entry.get("event_id"), entry
    for item in items:  # each of this test's deliveries is on a line with its event id
        mine = [entry for entry in delivery_lines if entry["delivery_id"] == item["id"]]
        assert mine and {entry["event_id"] for entry in mine} == {item["event_id"]}
        assert len(mine) == 2  # the flaky receiver fails each first attempt
    # and no key, token or secret of this module appears anywhere
    assert secrets.values
    leaked = sorted(value for value in secrets.values if value in log)
    assert leaked == [], f"secrets in the log: {leaked}"


def _logged_attempts(stack: Stack, items: list[dict[str, Any]], count: int) -> str | None:
    """The log of `webhooks serve`, once it names each of `items` in `count` lines."""
    log = stack.processes["serve"].log()
    return (
        log if all(log.count(f'"delivery_id": "{item["id"]}"') >= count for item in items) else None
    )
