"""One delivery attempt, start to finish (`Deliverer`), with the HTTP edge replaced by
`httpx.MockTransport`: the request a receiver gets (SPEC 6), what each answer does to
the delivery and its attempts (SPEC 7, 8), on both backends."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook, WebhookVerificationError

from core import configs
from core.clock import utcnow
from core.configs import new_signing_secret
from core.database import Database, record_dict
from core.lifecycle import Status
from core.settings import Settings
from core.signing_keys import SignatureScheme, new_private_key, public_key
from core.tables import webhook_configs
from tests.conftest import make_settings
from tests.outbox.helpers import (
    TOKEN,
    attempts_of,
    delivery,
    disable_config,
    eventually,
    make_due,
    new_client_id,
    new_config,
    new_delivery,
)
from tests.receivers import SPEC_HEADERS, Script
from tests.v1a import VerificationError as V1aVerificationError
from tests.v1a import verify as verify_v1a
from workers.delivery import Deliverer, Outcome
from workers.transport import MAX_RESPONSE_BODY_BYTES

URL = "https://receiver.example/hooks/in?source=test"
MIN_BACKOFF_MS = 1000
MAX_BACKOFF_MS = 60_000
MAX_ATTEMPTS = 3
JITTER = 0.2
CONTENT = {
    "id": "0b7e2b4e-2d1c-4c61-9d0a-3b0b1c2d3e4f",
    "patient_id": "patient-7",
    "status": "completed",
    "answers": {"pain": "mild", "notes": "zażółć gęślą jaźń"},
    "created_at": "2030-01-01T10:00:00Z",
    "completed_at": "2030-01-01T10:05:00Z",
}
# Headers the HTTP client adds on its own; everything else must be SPEC 6's.
TRANSPORT_HEADERS = {"host", "content-length", "accept", "accept-encoding", "connection"}

MakeDeliverer = Callable[..., Deliverer]


@pytest.fixture
async def make_deliverer(
    db: Database, database_url: str
) -> AsyncIterator[Callable[..., Deliverer]]:
    """`make_deliverer(receiver, **settings)`: a Deliverer whose HTTP goes to `receiver`."""
    clients: list[httpx.MockTransport] = []

    def make(receiver: Script, **overrides: object) -> Deliverer:
        values: dict[str, object] = {
            "WEBHOOKS_MAX_ATTEMPTS": MAX_ATTEMPTS,
            "WEBHOOKS_MIN_BACKOFF_MS": MIN_BACKOFF_MS,
            "WEBHOOKS_MAX_BACKOFF_MS": MAX_BACKOFF_MS,
            **overrides,
        }
        settings: Settings = make_settings(database_url, **values)
        http = httpx.MockTransport(receiver.handle)
        clients.append(http)
        return Deliverer(db=db, http=http, settings=settings)

    yield make
    for http in clients:
        await http.aclose()


@pytest.fixture
async def config(db: Database) -> dict[str, Any]:
    return await new_config(db, await new_client_id(db), url=URL)


async def _delivery_id(db: Database, config: dict[str, Any]) -> str:
    return await new_delivery(db, config, event_type="survey_finished", content=CONTENT)


def _webhook_headers(request: httpx.Request) -> dict[str, str]:
    return {name: request.headers[name] for name in SPEC_HEADERS}


# --- the request ------------------------------------------------------------------------


async def test_the_request_is_exactly_spec_6(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    receiver = Script()
    delivery_id = await _delivery_id(db, config)
    sent_at = int(time.time())

    await make_deliverer(receiver).deliver(delivery_id)

    [request] = receiver.requests
    assert request.method == "POST"
    assert str(request.url) == URL
    # SPEC 6's headers, and SPEC 17's trace context.
    assert set(request.headers) - TRANSPORT_HEADERS == SPEC_HEADERS | {"traceparent"}
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-webhook-infermedica-token"] == TOKEN
    assert request.headers["webhook-id"] == delivery_id
    assert abs(int(request.headers["webhook-timestamp"]) - sent_at) <= 2
    assert "webhooks" in request.headers["user-agent"]
    body = request.content
    assert json.loads(body) == {"event_type": "survey_finished", "content": CONTENT}
    assert list(json.loads(body)) == ["event_type", "content"]
    assert body.decode() == (await delivery(db, delivery_id))["body"]
    verified = Webhook(config["signing_secret"]).verify(body, _webhook_headers(request))
    assert verified == {"event_type": "survey_finished", "content": CONTENT}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(body, _webhook_headers(request))


async def test_during_a_rotation_both_secrets_verify(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    # Given a configuration whose secret was just rotated
    old = config["signing_secret"]
    new = await configs.rotate_secret(db, config["client_id"], config["id"])
    assert new is not None
    receiver = Script()
    delivery_id = await _delivery_id(db, config)

    # When a delivery is sent
    await make_deliverer(receiver).deliver(delivery_id)

    # Then it carries two signatures, and a receiver with either secret accepts it
    [request] = receiver.requests
    headers = _webhook_headers(request)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(request.content, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(request.content, headers)


async def test_a_v1a_configuration_signs_with_ed25519(
    db: Database, make_deliverer: MakeDeliverer
) -> None:
    # Given a v1a configuration whose key was rotated (both keys sign for 24 hours)
    config = await new_config(
        db, await new_client_id(db), url=URL, signature_scheme=SignatureScheme.V1A
    )
    old = config["signing_secret"]
    new = await configs.rotate_secret(db, config["client_id"], config["id"])
    assert new is not None and new.startswith("whsk_")
    receiver = Script()

    # When a delivery is sent
    await make_deliverer(receiver).deliver(await _delivery_id(db, config))

    # Then it carries two v1a signatures, each verified by its public key, and no private key
    [request] = receiver.requests
    headers = _webhook_headers(request)
    assert [sig.split(",")[0] for sig in headers["webhook-signature"].split(" ")] == ["v1a"] * 2
    for key in (old, new):
        assert (
            verify_v1a(request.content, headers, public_key=public_key(key))["content"] == CONTENT
        )
        assert key.removeprefix("whsk_") not in str(request.headers)
    with pytest.raises(V1aVerificationError):
        verify_v1a(request.content, headers, public_key=public_key(new_private_key()))


async def test_every_retry_carries_the_same_webhook_id(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    receiver = Script([httpx.Response(500), httpx.Response(200)])
    deliverer = make_deliverer(receiver)
    delivery_id = await _delivery_id(db, config)

    await deliverer.deliver(delivery_id)
    await make_due(db, delivery_id)
    await deliverer.deliver(delivery_id)

    assert [r.headers["webhook-id"] for r in receiver.requests] == [delivery_id] * 2
    assert receiver.requests[0].content == receiver.requests[1].content
    for request in receiver.requests:
        Webhook(config["signing_secret"]).verify(request.content, _webhook_headers(request))


# --- what the answer does ---------------------------------------------------------------


@pytest.mark.parametrize("status_code", [200, 201, 202, 204, 299])
async def test_a_2xx_delivers(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any], status_code: int
) -> None:
    receiver = Script([httpx.Response(status_code, text="thanks")])
    delivery_id = await _delivery_id(db, config)
    before = utcnow()

    outcome = await make_deliverer(receiver).deliver(delivery_id)

    assert outcome == Outcome(Status.DELIVERED)
    row = await delivery(db, delivery_id)
    assert row["status"] == "delivered"
    assert row["attempt_count"] == 1
    assert row["next_attempt_at"] is None
    assert row["lease_expires_at"] is None
    assert before - timedelta(seconds=1) <= row["delivered_at"] <= utcnow()
    assert row["last_attempt_at"] <= row["delivered_at"]
    [attempt] = await attempts_of(db, delivery_id)
    assert attempt["number"] == 1
    assert attempt["status_code"] == status_code
    assert attempt["error"] is None
    assert attempt["response_body"] == "thanks"
    assert attempt["duration_ms"] >= 0
    # a delivered delivery is not sent again by a duplicate message
    assert await make_deliverer(receiver).deliver(delivery_id) == Outcome(None)
    assert len(receiver.requests) == 1


async def test_a_500_backs_off_and_records_the_first_16_kib(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    # Given a receiver that fails with a 20 KiB body
    receiver = Script([httpx.Response(500, text="e" * (20 * 1024))])
    delivery_id = await _delivery_id(db, config)

    # When the delivery is attempted
    outcome = await make_deliverer(receiver).deliver(delivery_id)

    # Then it stays pending, due about min_backoff later (+-20%)
    assert outcome.status == Status.PENDING
    assert outcome.retry_in_ms is not None
    low, high = MIN_BACKOFF_MS * (1 - JITTER), MIN_BACKOFF_MS * (1 + JITTER)
    assert low <= outcome.retry_in_ms <= high
    row = await delivery(db, delivery_id)
    assert row["status"] == "pending"
    assert row["attempt_count"] == 1
    assert row["lease_expires_at"] is None
    assert row["delivered_at"] is None
    waited_ms = (row["next_attempt_at"] - row["last_attempt_at"]) / timedelta(milliseconds=1)
    assert low <= waited_ms <= high
    # and the attempt is recorded with the first 16 KiB of the body
    [attempt] = await attempts_of(db, delivery_id)
    assert attempt["status_code"] == 500
    assert attempt["error"] == "http_status"
    assert attempt["response_body"] == "e" * MAX_RESPONSE_BODY_BYTES
    assert attempt["started_at"] == row["last_attempt_at"]


@pytest.mark.parametrize("status_code", [503, 429])
async def test_retry_after_is_honoured_on_429_and_503(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any], status_code: int
) -> None:
    receiver = Script([httpx.Response(status_code, headers={"Retry-After": "7"})])
    delivery_id = await _delivery_id(db, config)

    outcome = await make_deliverer(receiver).deliver(delivery_id)

    assert outcome.status == Status.PENDING
    assert outcome.retry_in_ms == 7000
    row = await delivery(db, delivery_id)
    assert row["next_attempt_at"] - row["last_attempt_at"] == timedelta(seconds=7)


async def test_retry_after_is_capped_at_the_maximum_back_off(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    receiver = Script([httpx.Response(503, headers={"Retry-After": "86400"})])
    delivery_id = await _delivery_id(db, config)

    outcome = await make_deliverer(receiver).deliver(delivery_id)

    assert outcome.retry_in_ms == MAX_BACKOFF_MS


async def test_retry_after_on_a_500_is_ignored(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    receiver = Script([httpx.Response(500, headers={"Retry-After": "30"})])
    delivery_id = await _delivery_id(db, config)

    outcome = await make_deliverer(receiver).deliver(delivery_id)

    assert outcome.retry_in_ms is not None
    assert outcome.retry_in_ms <= MIN_BACKOFF_MS * (1 + JITTER)


@pytest.mark.parametrize("status_code", [301, 302, 307, 308])
async def test_a_redirect_is_a_failure_and_is_not_followed(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any], status_code: int
) -> None:
    receiver = Script(
        [httpx.Response(status_code, headers={"Location": "https://elsewhere.example/"})]
    )
    delivery_id = await _delivery_id(db, config)

    outcome = await make_deliverer(receiver).deliver(delivery_id)

    assert [str(r.url) for r in receiver.requests] == [URL]
    assert outcome.status == Status.PENDING
    [attempt] = await attempts_of(db, delivery_id)
    assert (attempt["status_code"], attempt["error"]) == (status_code, "http_status")


@pytest.mark.parametrize("status_code", [400, 401, 404, 422, 500, 502])
async def test_any_other_status_is_a_failure(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any], status_code: int
) -> None:
    receiver = Script([httpx.Response(status_code)])
    delivery_id = await _delivery_id(db, config)

    outcome = await make_deliverer(receiver).deliver(delivery_id)

    assert outcome.status == Status.PENDING
    assert (await attempts_of(db, delivery_id))[0]["error"] == "http_status"


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (httpx.ConnectError("refused"), "connect_error"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.RemoteProtocolError("garbage"), "network_error"),
    ],
)
async def test_a_transport_failure_is_recorded_and_retried(
    db: Database,
    make_deliverer: MakeDeliverer,
    config: dict[str, Any],
    failure: Exception,
    code: str,
) -> None:
    receiver = Script([failure])
    delivery_id = await _delivery_id(db, config)

    outcome = await make_deliverer(receiver).deliver(delivery_id)

    assert outcome.status == Status.PENDING
    assert outcome.error is not None and outcome.error.code == code
    [attempt] = await attempts_of(db, delivery_id)
    assert (attempt["status_code"], attempt["error"], attempt["response_body"]) == (
        None,
        code,
        None,
    )
    row = await delivery(db, delivery_id)
    assert row["status"] == "pending" and row["next_attempt_at"] > row["last_attempt_at"]


async def test_after_the_last_attempt_the_delivery_fails(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    # Given a receiver that always answers 500 and WEBHOOKS_MAX_ATTEMPTS=3
    receiver = Script([httpx.Response(500, text="down")])
    deliverer = make_deliverer(receiver)
    delivery_id = await _delivery_id(db, config)

    # When each attempt is made as soon as it is due
    outcomes = []
    for _ in range(MAX_ATTEMPTS):
        outcomes.append(await deliverer.deliver(delivery_id))
        await make_due(db, delivery_id)

    # Then the waits grew by 4x and the third failure is final
    first, second, last = outcomes
    assert first.retry_in_ms is not None and second.retry_in_ms is not None
    assert 800 <= first.retry_in_ms <= 1200
    assert 3200 <= second.retry_in_ms <= 4800
    assert last.status == Status.FAILED and last.retry_in_ms is None
    row = await delivery(db, delivery_id)
    assert row["status"] == "failed"
    assert row["attempt_count"] == MAX_ATTEMPTS
    assert row["delivered_at"] is None
    assert [a["number"] for a in await attempts_of(db, delivery_id)] == [1, 2, 3]
    # and nothing more is sent
    assert await deliverer.deliver(delivery_id) == Outcome(None)
    assert len(receiver.requests) == MAX_ATTEMPTS


async def test_a_blocked_target_fails_at_once_without_a_request(
    db: Database, make_deliverer: MakeDeliverer
) -> None:
    config = await new_config(db, await new_client_id(db), url="http://127.0.0.1:9/hook")
    receiver = Script()
    delivery_id = await _delivery_id(db, config)

    outcome = await make_deliverer(receiver, WEBHOOKS_ALLOW_PRIVATE_TARGETS=False).deliver(
        delivery_id
    )

    assert outcome.status == Status.FAILED
    assert outcome.error is not None and outcome.error.code == "blocked_target"
    assert receiver.requests == []
    [attempt] = await attempts_of(db, delivery_id)
    assert (attempt["status_code"], attempt["error"]) == (None, "blocked_target")
    row = await delivery(db, delivery_id)
    assert (row["status"], row["next_attempt_at"]) == ("failed", None)


# --- deliveries that are not sent -------------------------------------------------------


async def test_a_disabled_configuration_holds_without_an_attempt(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    delivery_id = await _delivery_id(db, config)
    await disable_config(db, config["id"])
    receiver = Script()

    outcome = await make_deliverer(receiver).deliver(delivery_id)

    assert outcome == Outcome(Status.HELD)
    assert receiver.requests == []
    assert await attempts_of(db, delivery_id) == []
    row = await delivery(db, delivery_id)
    assert (row["status"], row["next_attempt_at"], row["lease_expires_at"]) == ("held", None, None)


async def test_a_configuration_deleted_after_fan_out_cancels(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    # A deletion that lands while the delivery is still pending (between fan-out and claim)
    delivery_id = await _delivery_id(db, config)
    await db.execute(
        webhook_configs.update()
        .where(webhook_configs.c.id == config["id"])
        .values(deleted_at=utcnow())
    )
    receiver = Script()

    outcome = await make_deliverer(receiver).deliver(delivery_id)

    assert outcome == Outcome(Status.CANCELLED)
    assert receiver.requests == []
    assert await attempts_of(db, delivery_id) == []
    assert (await delivery(db, delivery_id))["status"] == "cancelled"


async def test_a_deleted_configuration_is_not_sent_to(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    delivery_id = await _delivery_id(db, config)
    assert await configs.delete_config(db, config["client_id"], config["id"]) is not None
    receiver = Script()

    outcome = await make_deliverer(receiver).deliver(delivery_id)

    assert outcome == Outcome(None)
    assert receiver.requests == []
    assert (await delivery(db, delivery_id))["status"] == "cancelled"


async def test_a_delivery_that_is_not_due_or_is_leased_is_skipped(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    later = await new_delivery(db, config, next_attempt_at=utcnow() + timedelta(minutes=5))
    leased = await new_delivery(db, config, lease_expires_at=utcnow() + timedelta(minutes=1))
    receiver = Script()
    deliverer = make_deliverer(receiver)

    assert await deliverer.deliver(later) == Outcome(None)
    assert await deliverer.deliver(leased) == Outcome(None)
    assert receiver.requests == []


# --- endpoint health (SPEC 9) -------------------------------------------------------------


async def _config_row(db: Database, config_id: str) -> dict[str, Any]:
    row = await db.fetch_one(sa.select(webhook_configs).where(webhook_configs.c.id == config_id))
    assert row is not None
    return record_dict(row)


async def test_a_410_disables_the_configuration_and_holds_the_delivery(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    receiver = Script([httpx.Response(410, text="gone")])
    delivery_id = await _delivery_id(db, config)

    outcome = await make_deliverer(receiver).deliver(delivery_id)

    assert outcome.status == Status.HELD
    row = await delivery(db, delivery_id)
    assert (row["status"], row["next_attempt_at"], row["attempt_count"]) == ("held", None, 1)
    [attempt] = await attempts_of(db, delivery_id)
    assert (attempt["status_code"], attempt["error"]) == (410, "http_status")
    stored = await _config_row(db, config["id"])
    assert (stored["enabled"], stored["disabled_reason"]) == (False, "gone")


async def test_failing_for_longer_than_disable_after_disables_the_configuration(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    # Given a configuration whose deliveries have been failing for a while
    deliverer = make_deliverer(Script([httpx.Response(500)]), WEBHOOKS_DISABLE_AFTER_S=3600)
    first = await _delivery_id(db, config)
    await deliverer.deliver(first)
    failing_since = (await _config_row(db, config["id"]))["failing_since"]
    assert failing_since is not None
    assert (await _config_row(db, config["id"]))["enabled"] is True

    # When a failure comes more than WEBHOOKS_DISABLE_AFTER_S after the first one
    await db.execute(
        webhook_configs.update()
        .where(webhook_configs.c.id == config["id"])
        .values(failing_since=failing_since - timedelta(hours=1, seconds=1))
    )
    await deliverer.deliver(await _delivery_id(db, config))

    # Then the configuration is disabled as failing, and its next delivery is held
    stored = await _config_row(db, config["id"])
    assert (stored["enabled"], stored["disabled_reason"]) == (False, "failing")
    await make_due(db, first)
    assert await deliverer.deliver(first) == Outcome(Status.HELD)


async def test_a_success_ends_the_failing_streak(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    deliverer = make_deliverer(Script([httpx.Response(500), httpx.Response(200)]))
    delivery_id = await _delivery_id(db, config)

    await deliverer.deliver(delivery_id)
    assert (await _config_row(db, config["id"]))["failing_since"] is not None
    await make_due(db, delivery_id)
    await deliverer.deliver(delivery_id)

    stored = await _config_row(db, config["id"])
    assert (stored["enabled"], stored["failing_since"]) == (True, None)


# --- batches ----------------------------------------------------------------------------


async def test_a_batch_attempts_each_delivery_once_and_records_each_outcome(
    db: Database, make_deliverer: MakeDeliverer
) -> None:
    # Given a healthy and a failing endpoint of one client, deliveries to both, one
    # delivery that is already final and an id that does not exist
    client_id = await new_client_id(db)
    healthy = await new_config(db, client_id, url="https://ok.example/in")
    failing = await new_config(db, client_id, url="https://down.example/in")
    to_healthy = [await _delivery_id(db, healthy) for _ in range(2)]
    to_failing = await _delivery_id(db, failing)
    final = await _delivery_id(db, healthy)
    receiver = Script(by_host={"down.example": httpx.Response(500, text="r")})
    deliverer = make_deliverer(receiver)
    await deliverer.deliver(final)
    receiver.requests.clear()
    unknown = str(uuid.uuid4())

    # When they are delivered as one batch
    outcomes = await deliverer.deliver_many([*to_healthy, to_failing, final, unknown])

    # Then each pending delivery got one request and its own outcome
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(
        [*to_healthy, to_failing]
    )
    assert [outcomes[i].status for i in to_healthy] == [Status.DELIVERED, Status.DELIVERED]
    assert outcomes[to_failing].status == Status.PENDING
    assert outcomes[to_failing].retry_in_ms is not None
    assert outcomes[final] == outcomes[unknown] == Outcome(None)
    # and the database holds each attempt and state, and each endpoint's health
    for delivery_id, status, code in [
        (to_healthy[0], "delivered", 200),
        (to_healthy[1], "delivered", 200),
        (to_failing, "pending", 500),
    ]:
        row = await delivery(db, delivery_id)
        assert (row["status"], row["attempt_count"], row["lease_expires_at"]) == (status, 1, None)
        [attempt] = await attempts_of(db, delivery_id)
        assert (attempt["number"], attempt["status_code"]) == (1, code)
    assert len(await attempts_of(db, final)) == 1
    assert (await _config_row(db, healthy["id"]))["failing_since"] is None
    assert (await _config_row(db, failing["id"]))["failing_since"] is not None


async def test_in_a_batch_a_gone_answer_disables_the_endpoint_whatever_else_it_answered(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    receiver = Script([httpx.Response(200), httpx.Response(410)])
    ids = [await _delivery_id(db, config) for _ in range(2)]

    outcomes = await make_deliverer(receiver).deliver_many(ids)

    assert sorted(str(o.status) for o in outcomes.values()) == ["delivered", "held"]
    stored = await _config_row(db, config["id"])
    assert (stored["enabled"], stored["disabled_reason"]) == (False, "gone")


async def test_no_more_requests_are_in_flight_than_the_worker_concurrency(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    # Given a receiver that answers slowly, and a worker with 3 deliveries in flight at most
    in_flight = peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return httpx.Response(200)

    deliverer = make_deliverer(
        Script(), WEBHOOKS_WORKER_CONCURRENCY=3, WEBHOOKS_ENDPOINT_CONCURRENCY=3
    )
    deliverer.http = httpx.MockTransport(slow)
    ids = [await _delivery_id(db, config) for _ in range(7)]

    # When two batches are delivered at once
    try:
        first, second = await asyncio.gather(
            deliverer.deliver_many(ids[:4]), deliverer.deliver_many(ids[4:])
        )
    finally:
        await deliverer.http.aclose()

    # Then every delivery went out, never more than 3 at a time
    assert {o.status for o in [*first.values(), *second.values()]} == {Status.DELIVERED}
    assert len(first) + len(second) == 7
    assert peak == 3


# --- each endpoint's lane ----------------------------------------------------------------


async def test_a_hanging_endpoint_holds_only_its_lane_and_others_go_through(
    db: Database, make_deliverer: MakeDeliverer, config: dict[str, Any]
) -> None:
    # Given an endpoint that hangs, beside a healthy one, and lanes 2 wide
    healthy = await new_config(db, config["client_id"], url="https://healthy.example/in")
    release = asyncio.Event()
    hanging_in_flight = healthy_done = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal hanging_in_flight, healthy_done
        if request.url.host == "healthy.example":
            healthy_done += 1
            return httpx.Response(200)
        hanging_in_flight += 1
        await release.wait()
        return httpx.Response(200)

    deliverer = make_deliverer(
        Script(), WEBHOOKS_WORKER_CONCURRENCY=16, WEBHOOKS_ENDPOINT_CONCURRENCY=2
    )
    deliverer.http = httpx.MockTransport(answer)
    stuck = [await _delivery_id(db, config) for _ in range(5)]
    fine = [await _delivery_id(db, healthy) for _ in range(5)]

    # When a batch of both is delivered while the hanging endpoint does not answer
    batch = asyncio.create_task(deliverer.deliver_many([*stuck, *fine]))
    try:
        await _until(lambda: deliverer.lanes.waiting(config["id"]) == 3)
        await _until(lambda: healthy_done == 5 and deliverer.lanes.waiting(config["id"]) == 0)
        # Then the healthy endpoint got all its deliveries, the hanging one only 2, and
        # the others, having waited in vain, are turned away
        assert hanging_in_flight == 2
    finally:
        release.set()
        outcomes = await batch
        await deliverer.http.aclose()

    # and the 3 turned away are pending, unattempted, unleased, due again soon
    deferred = [id_ for id_ in stuck if outcomes[id_].deferred]
    assert len(deferred) == 3
    for delivery_id in deferred:
        row = await delivery(db, delivery_id)
        assert (row["status"], row["attempt_count"], row["lease_expires_at"]) == (
            "pending",
            0,
            None,
        )
        assert row["next_attempt_at"] > utcnow()
        assert outcomes[delivery_id].retry_in_ms is not None
        assert await attempts_of(db, delivery_id) == []
    assert {outcomes[id_].status for id_ in fine} == {Status.DELIVERED}


async def _until(condition: Callable[[], bool]) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check, timeout_s=5)
