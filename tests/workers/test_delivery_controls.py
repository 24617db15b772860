"""The delivery controls in an attempt (SPEC 13), `Deliverer` with a mock receiver, both
backends: extra headers on every attempt, the signature over the (thin) body sent, a
delivery over its configuration's rate or in-flight cap released unattempted and
uncharged with the reason it waits, and a fifo head handing over to the next."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from core import configs
from core.controls import body_for
from core.database import Database
from core.lifecycle import Status
from tests.conftest import make_settings
from tests.outbox.helpers import TOKEN, attempts_of, delivery, new_client_id, new_delivery
from tests.receivers import Script
from workers.delivery import Deliverer

URL = "https://receiver.example/hooks"
SURVEY = {"id": "s-1", "patient_id": "p-1", "answers": {"q1": "yes"}}


class SlowScript(Script):
    """Answers 200 once both attempts could have started: they overlap."""

    async def handle(self, request: httpx.Request) -> httpx.Response:  # type: ignore[override]
        self.requests.append(request)
        await asyncio.sleep(0.2)
        return httpx.Response(200)


@pytest.fixture
async def deliverer(
    db: Database, database_url: str
) -> AsyncIterator[Callable[[Script], Deliverer]]:
    clients: list[httpx.MockTransport] = []

    def make(receiver: Script) -> Deliverer:
        http = httpx.MockTransport(receiver.handle)
        clients.append(http)
        return Deliverer(db=db, http=http, settings=make_settings(database_url))

    yield make
    for http in clients:
        await http.aclose()


async def _config(db: Database, **controls: Any) -> dict[str, Any]:
    return await configs.create_config(
        db,
        await new_client_id(db),
        url=URL,
        subscribed_events=["survey_created"],
        authorization_token=TOKEN,
        controls=controls,
    )


async def test_extra_headers_go_with_every_attempt_and_the_thin_body_verifies(
    db: Database, deliverer: Callable[[Script], Deliverer]
) -> None:
    config = await _config(db, headers={"X-Api-Key": "k-1"}, payload="thin")
    body = body_for("survey_created", SURVEY, "thin")
    delivery_id = await new_delivery(db, config, content=SURVEY)
    await db.execute(
        "UPDATE deliveries SET body = :body WHERE id = :id", {"body": body, "id": delivery_id}
    )
    receiver = Script(replies=[httpx.Response(500), httpx.Response(200)])
    sender = deliverer(receiver)

    await sender.deliver(delivery_id)
    await db.execute(
        "UPDATE deliveries SET next_attempt_at = created_at WHERE id = :id", {"id": delivery_id}
    )
    outcome = await sender.deliver(delivery_id)

    assert outcome.status == Status.DELIVERED
    assert [request.headers["x-api-key"] for request in receiver.requests] == ["k-1", "k-1"]
    last = receiver.requests[-1]
    verified = Webhook(config["signing_secret"]).verify(last.content, dict(last.headers))
    assert verified == {"event_type": "survey_created", "content": {"id": "s-1"}}


async def test_over_the_rate_a_delivery_waits_unattempted_and_uncharged(
    db: Database, deliverer: Callable[[Script], Deliverer]
) -> None:
    config = await _config(db, rate_limit_per_s=2)
    ids = [await new_delivery(db, config) for _ in range(3)]
    receiver = Script()

    outcomes = await deliverer(receiver).deliver_many(ids)

    assert len(receiver.requests) == 2
    [waiting] = [id_ for id_, outcome in outcomes.items() if outcome.deferred]
    assert outcomes[waiting].retry_in_ms is not None and outcomes[waiting].retry_in_ms > 0
    row = await delivery(db, waiting)
    assert (row["status"], row["attempt_count"], row["waiting_reason"]) == (
        Status.PENDING,
        0,
        "rate_limited",
    )
    assert row["lease_expires_at"] is None
    assert await attempts_of(db, waiting) == []


async def test_over_the_in_flight_cap_a_delivery_waits_with_that_reason(
    db: Database, deliverer: Callable[[Script], Deliverer]
) -> None:
    config = await _config(db, max_in_flight=1)
    ids = [await new_delivery(db, config) for _ in range(2)]
    receiver = SlowScript()

    outcomes = await deliverer(receiver).deliver_many(ids)

    [waiting] = [id_ for id_, outcome in outcomes.items() if outcome.deferred]
    assert (await delivery(db, waiting))["waiting_reason"] == "max_in_flight"
    assert len(receiver.requests) == 1


async def test_a_delivered_fifo_head_hands_over_to_the_next(
    db: Database, deliverer: Callable[[Script], Deliverer]
) -> None:
    config = await _config(db, ordering="fifo")
    first, second = [await new_delivery(db, config, seq=seq) for seq in (1, 2)]
    receiver = Script()

    outcomes = await deliverer(receiver).deliver_many([second, first])

    assert [json.loads(r.content) for r in receiver.requests] == [
        json.loads((await delivery(db, first))["body"])
    ]
    assert outcomes[first].status == Status.DELIVERED
    # The next head is handed back to be sent now, in a message of its own.
    assert outcomes[second].deferred and outcomes[second].retry_in_ms == 0
    assert (await delivery(db, second))["waiting_reason"] == "ordering"
