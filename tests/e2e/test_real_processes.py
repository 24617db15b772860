"""Behaviours that in-process tests cover, seen again from outside real processes: secret
rotation (SPEC 6), `Retry-After` (SPEC 7), `webhooks prune` (SPEC 10) and the SSRF
guard where the worker connects (SPEC 5).

Two stacks serve the rotation and `Retry-After` tests: `webhooks serve` on SQLite and the
Procfile's processes on PostgreSQL with the session's Redis. The prune and SSRF tests
start and stop processes of their own, each Procfile on a Redis of its own. A real
process's clock cannot be moved, so the tests age rows (and end the rotation's grace
period) by updating their timestamps in the database instead.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shlex
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook, WebhookVerificationError

from core.clock import utcnow
from core.database import Database, open_database, record_dict
from core.events import SURVEY_EVENTS
from core.tables import attempts, deliveries, outbox, webhook_configs
from tests.e2e.harness import (
    CONFIGS,
    WEBHOOKS,
    Stack,
    attempts_of,
    create_survey,
    list_deliveries,
    make_config,
    procfile,
    procfile_stack,
    serve_stack,
    settled,
    stack_env,
)
from tests.receivers import Received, Receiver
from tests.servers import RedisServer, free_port, postgres_database, redis_server, wait_for

pytestmark = pytest.mark.e2e

T = TypeVar("T")

MAX_ATTEMPTS = 3
# A back-off minimum far below the `Retry-After` the receiver asks for, and a maximum
# above it (`Retry-After` is honoured up to the maximum).
EXTRA_ENV = {
    "WEBHOOKS_MIN_BACKOFF_MS": "50",
    "WEBHOOKS_MAX_BACKOFF_MS": "30000",
    "WEBHOOKS_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
}
RETRY_AFTER_S = 2
SETTLE_TIMEOUT_S = 20.0
ALLOW_PRIVATE = "WEBHOOKS_ALLOW_PRIVATE_TARGETS"


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("real-serve")
    url = f"sqlite:///{log_dir / 'webhooks.db'}"
    with serve_stack(url, log_dir, **EXTRA_ENV) as stack:
        yield stack


@pytest.fixture(scope="module")
def procfile_pg(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("real-procfile")
    with postgres_database() as url, procfile_stack(url, redis.url, log_dir, **EXTRA_ENV) as stack:
        yield stack


@pytest.fixture(params=["serve", "procfile_pg"])
def stack(request: pytest.FixtureRequest) -> Stack:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@contextmanager
def database_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """A new database of this test: SQLite for `serve`, PostgreSQL for `procfile`."""
    if kind == "serve":
        yield f"sqlite:///{tmp_path / 'webhooks.db'}"
        return
    with postgres_database() as url:
        yield url


# -- helpers --------------------------------------------------------------------------


def in_database(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` on a connection of the test's own to the stack's database."""

    async def run() -> T:
        db = open_database(url)
        await db.connect()
        try:
            return await work(db)
        finally:
            await db.disconnect()

    return asyncio.run(run())


def without_private_targets(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name != ALLOW_PRIVATE}


# -- secret rotation (SPEC 6) ------------------------------------------------------------


def signers(item: Received, secrets: dict[str, str]) -> list[set[str]]:
    """For each signature of the request, the names of the secrets it verifies under
    (the official library, given that one signature alone)."""
    found = []
    for signature in item.headers["webhook-signature"].split(" "):
        alone = {**item.headers, "webhook-signature": signature}
        names = set()
        for name, secret in secrets.items():
            try:
                Webhook(secret).verify(item.body, alone)
            except WebhookVerificationError:
                continue
            names.add(name)
        found.append(names)
    return found


def test_a_rotated_secret_signs_beside_the_old_one_until_the_grace_period_ends(
    stack: Stack, api: httpx.Client, receiver: Receiver
) -> None:
    # Given a configuration whose secret has just been rotated
    headers = stack.new_client("rotation")
    path = f"/ok/{stack.port}/rotation"
    config = make_config(api, headers, receiver.url(path))
    old = config["signing_secret"]
    rotated = api.post(f"{CONFIGS}/{config['id']}/secret/rotate", headers=headers)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["signing_secret"]
    assert new != old
    shown = api.get(f"{CONFIGS}/{config['id']}/secret", headers=headers)
    assert shown.json() == {"signing_secret": new}
    url = stack.env["DATABASE_URL"]
    query = sa.select(webhook_configs.c.previous_secret_expires_at).where(
        webhook_configs.c.id == config["id"]
    )
    expires: datetime = in_database(url, lambda db: db.fetch_val(query))
    assert timedelta(hours=23, minutes=59) < expires - utcnow() <= timedelta(hours=24)

    # When an event is delivered during the grace period
    create_survey(api, headers, "during")
    [during] = receiver.wait(path, 1, timeout_s=SETTLE_TIMEOUT_S)

    # Then it carries two signatures, one by each secret, and each secret verifies it
    assert sorted(signers(during, {"old": old, "new": new}), key=sorted) == [{"new"}, {"old"}]
    for secret in (old, new):
        assert Webhook(secret).verify(during.body, during.headers) == during.json()

    # When the grace period is over (its end moved into the past in the database)
    expire = (
        webhook_configs.update()
        .where(webhook_configs.c.id == config["id"])
        .values(previous_secret_expires_at=utcnow() - timedelta(seconds=1))
    )
    in_database(url, lambda db: db.execute(expire))
    create_survey(api, headers, "after")
    _, after = receiver.wait(path, 2, timeout_s=SETTLE_TIMEOUT_S)

    # Then only the new secret signs
    assert signers(after, {"old": old, "new": new}) == [{"new"}]
    assert Webhook(new).verify(after.body, after.headers) == after.json()
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(after.body, after.headers)
    settled(api, headers, config["id"], 2, status="delivered")


# -- Retry-After (SPEC 7) ----------------------------------------------------------------


def test_retry_after_of_a_real_receiver_outweighs_a_shorter_back_off(
    stack: Stack, api: httpx.Client, receiver: Receiver
) -> None:
    # Given a receiver that answers the first attempt 503 with Retry-After: 2 seconds,
    # while the back-off after a first failure is 50 ms
    headers = stack.new_client("retry-after")
    path = f"/flaky/1/{stack.port}/retry-after"
    receiver.statuses[path] = 503
    receiver.headers[path] = {"Retry-After": str(RETRY_AFTER_S)}
    config = make_config(api, headers, receiver.url(path))

    # When an event is delivered
    create_survey(api, headers, "retry-after")

    # Then it is delivered on the second attempt, and the audit shows both
    [item] = settled(api, headers, config["id"], 1, status="delivered")
    assert item["attempt_count"] == 2
    recorded = attempts_of(api, headers, config["id"], item["id"])
    assert [(a["number"], a["status_code"], a["error"]) for a in recorded] == [
        (1, 503, "http_status"),
        (2, 200, None),
    ]
    first, second = receiver.wait(path, 2, timeout_s=SETTLE_TIMEOUT_S)
    assert first.webhook_id == second.webhook_id == item["id"]
    # and the second attempt started no earlier than Retry-After after the first
    started = [datetime.fromisoformat(a["started_at"]) for a in recorded]
    assert (started[1] - started[0]).total_seconds() >= RETRY_AFTER_S, started
    # and, at the receiver, arrived no earlier than that after the first arrived: the
    # first request reached it at most its recorded duration after it started
    # (+10 ms for the rounding of `duration_ms` and the signing before the clock starts)
    first_latency_s = recorded[0]["duration_ms"] / 1000 + 0.01
    assert second.at - first.at >= RETRY_AFTER_S - first_latency_s, (first.at, second.at)


# -- prune (SPEC 10) ---------------------------------------------------------------------

AGE = timedelta(days=40)
OLDER_THAN = "30d"
DELIVERY_TIMES = (
    "created_at",
    "next_attempt_at",
    "lease_expires_at",
    "last_attempt_at",
    "delivered_at",
)
Rows = dict[Any, dict[str, Any]]


@contextmanager
def own_stack(kind: str, url: str, log_dir: Path) -> Iterator[Stack]:
    """`webhooks serve` (kind `serve`) or the Procfile's processes (`procfile`) on a Redis
    of their own: a worker of the module's stack, on the session's Redis, would take
    their messages and find no such delivery in its database."""
    if kind == "serve":
        with serve_stack(url, log_dir, **EXTRA_ENV) as running:
            yield running
        return
    with redis_server() as redis, procfile_stack(url, redis.url, log_dir, **EXTRA_ENV) as running:
        yield running


def _event_key(row: dict[str, Any]) -> tuple[str, str]:
    """(patient, event type) of an outbox row or of a delivery."""
    if "body" in row:
        body = json.loads(row["body"])
        return body["content"]["patient_id"], body["event_type"]
    return row["content"]["patient_id"], row["event_type"]


async def _age(
    db: Database, table: sa.Table, key: str, keys: set[Any], columns: tuple[str, ...]
) -> None:
    """Move the given timestamps of the rows `keys` AGE into the past (NULLs stay)."""
    for row in map(record_dict, await db.fetch_all(sa.select(table))):
        if row[key] not in keys:
            continue
        values = {column: row[column] - AGE for column in columns if row[column] is not None}
        await db.execute(table.update().where(table.c[key] == row[key]).values(values))


async def _snapshot(db: Database) -> dict[str, Rows]:
    tables = {
        "deliveries": (deliveries, "id"),
        "attempts": (attempts, "id"),
        "outbox": (outbox, "seq"),
    }
    found = {}
    for name, (table, key) in tables.items():
        query = sa.select(table)
        if table is outbox:  # the surveys' events: the operational ones are not made old
            query = query.where(outbox.c.event_type.in_(SURVEY_EVENTS))
        rows = map(record_dict, await db.fetch_all(query))
        found[name] = {row[key]: row for row in rows}
    return found


def _make_prunable_rows(stack: Stack, receiver: Receiver) -> dict[str, str]:
    """Through the running stack: surveys `old`, `recent` and `new` created, each
    delivered to one configuration and failed at another; survey `old` finished, pending
    at a third (503, Retry-After: 60) and held at a fourth (410 Gone disables it). The
    client's headers."""
    headers = stack.new_client("prune")
    pending_path = f"/status/{stack.port}/prune-pending"
    receiver.statuses[pending_path] = 503
    receiver.headers[pending_path] = {"Retry-After": "60"}
    gone_path = f"/status/{stack.port}/prune-gone"
    receiver.statuses[gone_path] = 410
    with stack.api() as api:
        ok = make_config(api, headers, receiver.url(f"/ok/{stack.port}/prune"))
        dead = make_config(api, headers, receiver.url(f"/dead/{stack.port}/prune"))
        pending = make_config(api, headers, receiver.url(pending_path), ["survey_finished"])
        held = make_config(api, headers, receiver.url(gone_path), ["survey_finished"])
        surveys = {name: create_survey(api, headers, name) for name in ("old", "recent", "new")}
        settled(api, headers, ok["id"], 3, status="delivered")
        settled(api, headers, dead["id"], 3, status="failed")
        finish = api.patch(
            f"/api/v2/surveys/{surveys['old']['id']}", json={"status": "completed"}, headers=headers
        )
        assert finish.status_code == 200, finish.text
        settled(api, headers, held["id"], 1, status="held")

        def attempted_once() -> bool:
            items = list_deliveries(api, headers, pending["id"])
            return [(item["status"], item["attempt_count"]) for item in items] == [("pending", 1)]

        wait_for(attempted_once, timeout_s=SETTLE_TIMEOUT_S, what="a pending delivery's attempt")
    return headers


def _create_undispatched_event(stack: Stack, headers: dict[str, str]) -> None:
    """A survey created while no poller runs: the Procfile's web stays alone, or replaces
    `webhooks serve` on its database."""
    for name in ("serve", "poller", "worker"):
        if name in stack.processes:
            stack.processes.pop(name).stop()
    if "web" not in stack.processes:
        stack.start("web", procfile()["web"])
        stack.wait_ready()
    with stack.api() as api:
        create_survey(api, headers, "unsent")


def _age_rows(url: str) -> None:
    """Make old: every time of the `old` deliveries (created and finished) and their
    attempts; only the creation of the `recent` ones (their last activity stays new);
    every outbox row but `new`'s, the undispatched `unsent` included."""

    async def age(db: Database) -> None:
        rows = await _snapshot(db)
        by_event = {key: _event_key(row) for key, row in rows["deliveries"].items()}
        old = {key for key, (patient, _) in by_event.items() if patient == "old"}
        recent = {key for key, (patient, _) in by_event.items() if patient == "recent"}
        old_attempts = {key for key, row in rows["attempts"].items() if row["delivery_id"] in old}
        old_events = {key for key, row in rows["outbox"].items() if _event_key(row)[0] != "new"}
        await _age(db, deliveries, "id", old, DELIVERY_TIMES)
        await _age(db, deliveries, "id", recent, ("created_at",))
        await _age(db, attempts, "id", old_attempts, ("started_at",))
        await _age(db, outbox, "seq", old_events, ("created_at", "dispatched_at"))

    in_database(url, age)


@pytest.mark.parametrize("kind", ["serve", "procfile"])
def test_prune_removes_exactly_the_old_final_deliveries_their_attempts_and_sent_events(
    kind: str, tmp_path: Path, receiver: Receiver
) -> None:
    with database_url(kind, tmp_path) as url:
        # Given real rows of every kind, made by the running service
        with own_stack(kind, url, tmp_path) as stack:
            headers = _make_prunable_rows(stack, receiver)
            # and an event that no poller has dispatched
            _create_undispatched_event(stack, headers)
        # and some of them 40 days old
        _age_rows(url)
        before = in_database(url, _snapshot)
        statuses = {(*_event_key(row), row["status"]) for row in before["deliveries"].values()}
        assert statuses == {
            (patient, "survey_created", status)
            for patient in ("old", "recent", "new")
            for status in ("delivered", "failed")
        } | {("old", "survey_finished", "pending"), ("old", "survey_finished", "held")}
        assert [row["dispatched_at"] for row in before["outbox"].values()].count(None) == 1

        # When deliveries and events older than 30 days are pruned
        output = stack.cli("prune", "--older-than", OLDER_THAN)

        # Then exactly the old delivered and failed deliveries (the last activity decides),
        # their attempts and the old dispatched events are gone; nothing else changed
        after = in_database(url, _snapshot)
    gone = {
        key
        for key, row in before["deliveries"].items()
        if _event_key(row) == ("old", "survey_created")
    }
    gone_events = {
        key
        for key, row in before["outbox"].items()
        if _event_key(row)[0] in ("old", "recent") and row["dispatched_at"] is not None
    }
    expected = {
        "deliveries": {k: v for k, v in before["deliveries"].items() if k not in gone},
        "attempts": {k: v for k, v in before["attempts"].items() if v["delivery_id"] not in gone},
        "outbox": {k: v for k, v in before["outbox"].items() if k not in gone_events},
    }
    assert after == expected
    removed = {name: len(before[name]) - len(after[name]) for name in before}
    assert removed == {"deliveries": 2, "attempts": 1 + MAX_ATTEMPTS, "outbox": 3}
    assert json.loads(output) == {**removed, "idempotency_keys": 0}


# -- the SSRF guard where the worker connects (SPEC 5) ----------------------------------------


def _loopback_targets(receiver: Receiver, port: int) -> dict[str, str]:
    """URLs of the receiver on 127.0.0.1, as an address and, where this machine's host
    name resolves to non-global addresses only, by that name (the resolver's check)."""
    path = f"/ok/{port}/ssrf"
    targets = {"address": receiver.url(path + "-address")}
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        return targets
    if infos and not any(ipaddress.ip_address(info[4][0]).is_global for info in infos):
        targets["name"] = f"http://{name}:{receiver.port}{path}-name"
    return targets


def _assert_blocked(
    api: httpx.Client,
    headers: dict[str, str],
    configs: dict[str, dict[str, Any]],
    receiver: Receiver,
) -> None:
    """Each configuration's one delivery failed at its first attempt as a blocked
    target, and the receiver got nothing."""
    for config in configs.values():
        [item] = settled(api, headers, config["id"], 1, status="failed")
        assert item["attempt_count"] == 1
        [attempt] = attempts_of(api, headers, config["id"], item["id"])
        assert (attempt["status_code"], attempt["error"]) == (None, "blocked_target")
    paths = {httpx.URL(config["url"]).path for config in configs.values()}
    assert [item.path for item in receiver.received if item.path in paths] == []


def test_a_worker_without_private_targets_blocks_a_loopback_url_saved_while_allowed(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Procfile on PostgreSQL (and a Redis of its own, see `own_stack`): web and poller
    allow private targets, the worker not."""
    with postgres_database() as url, redis_server() as redis:
        port = free_port()
        stack = Stack(stack_env(url, redis.url, port, **EXTRA_ENV), tmp_path, port)
        try:
            # Given web and poller that allow private targets, a worker that does not
            commands = procfile()
            stack.start("web", commands["web"])
            stack.start("poller", commands["poller"])
            stack.start("worker", commands["worker"], env=without_private_targets(stack.env))
            stack.wait_ready()
            headers = stack.new_client("ssrf")
            with stack.api() as api:
                # and configurations saved (by web) that point at 127.0.0.1
                targets = _loopback_targets(receiver, port)
                configs = {
                    kind: make_config(api, headers, target) for kind, target in targets.items()
                }
                # When an event is delivered to them
                create_survey(api, headers, "ssrf")
                # Then the worker refuses to connect: failed, blocked_target, nothing sent
                _assert_blocked(api, headers, configs, receiver)
        finally:
            stack.stop()


def test_webhooks_serve_restarted_without_private_targets_blocks_a_saved_loopback_url(
    tmp_path: Path, receiver: Receiver
) -> None:
    """`webhooks serve` on SQLite: the configuration is saved while private targets are
    allowed; the process is then restarted without the setting."""
    url = f"sqlite:///{tmp_path / 'webhooks.db'}"
    # Given configurations saved while private targets were allowed
    with serve_stack(url, tmp_path, **EXTRA_ENV) as allowed:
        headers = allowed.new_client("ssrf")
        with allowed.api() as api:
            targets = _loopback_targets(receiver, allowed.port)
            configs = {kind: make_config(api, headers, target) for kind, target in targets.items()}
    # When the service runs again without the setting and an event is delivered
    port = free_port()
    env = without_private_targets(stack_env(url, None, port, **EXTRA_ENV))
    stack = Stack(env, tmp_path, port)
    try:
        stack.start("serve-guarded", f"{shlex.quote(WEBHOOKS)} serve")
        stack.wait_ready()
        with stack.api() as api:
            create_survey(api, headers, "ssrf")
            # Then the delivery fails as a blocked target and the receiver gets nothing
            _assert_blocked(api, headers, configs, receiver)
    finally:
        stack.stop()
