"""SPEC 14 to 16 with real processes: `webhooks serve` (SQLite) and the Procfile's web,
poller and worker (PostgreSQL, Redis), a real receiver on 127.0.0.1.

- 20 concurrent retries of one survey POST with one `Idempotency-Key`: one survey, one
  delivery, every retry the same answer;
- erasure: no trace of the patient id or an answer in any table, while the audit still
  lists the deliveries;
- a 410 at one endpoint: a signed `webhook_disabled` at another of the client's,
  verified with its secret;
- a `v1a` configuration: its deliveries verify with the public key (the README's
  verifier) and fail with a changed body.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from core.database import open_database
from tests.e2e.harness import (
    CONFIGS,
    Stack,
    list_deliveries,
    make_config,
    procfile_stack,
    serve_stack,
    settled,
)
from tests.outbox.helpers import where_found as where_found_in
from tests.receivers import Receiver
from tests.servers import RedisServer, postgres_database
from tests.v1a import VerificationError, verify

pytestmark = pytest.mark.e2e

SURVEYS = "/api/v2/surveys"
RETRIES = 20


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


@pytest.fixture(params=["serve", "procfile_pg"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("trust")
    if request.param == "serve":
        with serve_stack(f"sqlite:///{log_dir / 'webhooks.db'}", log_dir) as stack:
            yield stack
        return
    redis: RedisServer = request.getfixturevalue("redis")
    with postgres_database() as url, procfile_stack(url, redis.url, log_dir) as stack:
        yield stack


def where_found(stack: Stack, *needles: str) -> list[str]:
    """`table.column` of every value, in every row of every table of the stack's
    database, whose text or JSON contains one of `needles`."""

    async def run() -> list[str]:
        db = open_database(stack.env["DATABASE_URL"])
        await db.connect()
        try:
            return await where_found_in(db, *needles)
        finally:
            await db.disconnect()

    return asyncio.run(run())


def test_twenty_concurrent_retries_with_one_key_make_one_survey_and_one_delivery(
    stack: Stack, receiver: Receiver
) -> None:
    headers = stack.new_client("idempotent")
    path = f"/ok/{stack.port}/idempotent"
    key = uuid.uuid4().hex
    body = {"patient_id": f"p-{key}", "answers": {"q1": "yes"}}
    with stack.api() as api:
        config = make_config(api, headers, receiver.url(path))

        def post(_: int) -> httpx.Response:
            with stack.api() as own:
                return own.post(SURVEYS, json=body, headers={**headers, "Idempotency-Key": key})

        with ThreadPoolExecutor(RETRIES) as pool:
            answers = list(pool.map(post, range(RETRIES)))

        assert {(a.status_code, a.text) for a in answers} == {(201, answers[0].text)}
        survey_id = answers[0].json()["id"]
        [item] = settled(api, headers, config["id"], 1, status="delivered")
        [received] = receiver.wait(path, 1)
        assert received.json()["content"]["id"] == survey_id
        assert received.webhook_id == item["id"]


def test_erasure_leaves_no_trace_of_the_patient_and_the_audit_lists_the_deliveries(
    stack: Stack, receiver: Receiver
) -> None:
    headers = stack.new_client("erasure")
    tag = uuid.uuid4().hex
    patient, answer = f"patient-{tag}", f"answer-{tag}"
    path = f"/ok/{stack.port}/erasure"
    with stack.api() as api:
        config = make_config(
            api, headers, receiver.url(path), ["survey_created", "survey_finished"]
        )
        created = api.post(
            SURVEYS, json={"patient_id": patient, "answers": {"q1": answer}}, headers=headers
        )
        assert created.status_code == 201, created.text
        done = api.patch(
            f"{SURVEYS}/{created.json()['id']}",
            json={"status": "completed", "answers": {"q2": answer}},
            headers={**headers, "Idempotency-Key": tag},
        )
        assert done.status_code == 200, done.text
        settled(api, headers, config["id"], 2, status="delivered")
        assert where_found(stack, patient, answer), "the scan would find nothing anyway"

        erased = api.post(f"/api/v2/patients/{patient}/erase", headers=headers)

        assert erased.status_code == 202, erased.text
        assert erased.json() == {"surveys": 1, "deliveries": 2}
        assert where_found(stack, patient, answer) == []
        items = list_deliveries(api, headers, config["id"])
        assert sorted(item["status"] for item in items) == ["delivered", "delivered"]


def test_a_410_is_announced_signed_to_another_endpoint_of_the_client(
    stack: Stack, receiver: Receiver
) -> None:
    headers = stack.new_client("operational")
    gone_path = f"/status/{stack.port}/operational-gone"
    receiver.statuses[gone_path] = 410
    ops_path = f"/ok/{stack.port}/operational-ops"
    with stack.api() as api:
        gone = make_config(api, headers, receiver.url(gone_path))
        ops = make_config(api, headers, receiver.url(ops_path), ["webhook_disabled"])
        response = api.post(SURVEYS, json={"patient_id": "p"}, headers=headers)
        assert response.status_code == 201, response.text

        [received] = receiver.wait(ops_path, 1)

    announced = Webhook(ops["signing_secret"]).verify(received.body, received.headers)
    assert announced["event_type"] == "webhook_disabled"
    assert announced["content"]["config_id"] == gone["id"]
    assert announced["content"]["disabled_reason"] == "gone"
    assert receiver.at(gone_path)[0].json()["event_type"] == "survey_created"


def test_a_v1a_configurations_deliveries_verify_with_its_public_key(
    stack: Stack, receiver: Receiver
) -> None:
    headers = stack.new_client("v1a")
    path = f"/ok/{stack.port}/v1a"
    with stack.api() as api:
        response = api.post(
            CONFIGS,
            json={
                "url": receiver.url(path),
                "subscribed_events": ["survey_created"],
                "signature_scheme": "v1a",
            },
            headers=headers,
        )
        assert response.status_code == 201, response.text
        public_key = response.json()["signing_public_key"]
        assert "signing_secret" not in response.json()
        survey = api.post(SURVEYS, json={"patient_id": "p"}, headers=headers)
        assert survey.status_code == 201, survey.text

        [received] = receiver.wait(path, 1)

    body: Any = verify(received.body, received.headers, public_key=public_key)
    assert body["content"]["id"] == survey.json()["id"]
    assert received.headers["webhook-signature"].startswith("v1a,")
    changed = received.body.replace(b'"p"', b'"q"')
    assert changed != received.body
    with pytest.raises(VerificationError):
        verify(changed, received.headers, public_key=public_key)
