"""SPEC 17 from the API request to the receiver, on both backends: the request's
`traceparent` is stored with its survey's event, copied onto the event's deliveries at
fan-out and sent on every attempt (retries included) with the same trace id and a new
span id; without one, or with an invalid one, the service starts a trace. Spans cover
the request, the fan-out and each attempt.

In-process: the app through `httpx.ASGITransport`, one fan-out round, and a `Deliverer`
whose real HTTP client POSTs to a real receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette

from core.clients import create_client
from core.database import Database
from outbox.fanout import FANOUT_SPAN, fan_out_batch
from service.app import create_app
from tests.conftest import make_settings
from tests.outbox.helpers import delivery, make_due, new_config, outbox_rows
from tests.receivers import Receiver
from tests.tracing import INCOMING, INCOMING_SPAN_ID, INCOMING_TRACE_ID, parsed, recorded_spans
from workers.delivery import ATTEMPT_SPAN, Deliverer
from workers.transport import create_transport

FLAKY = "/flaky/2/traced"  # 500, 500, then 200
INVALID = [
    "garbage",
    f"00-{'0' * 32}-{INCOMING_SPAN_ID}-01",  # an all-zero trace id
    f"00-{INCOMING_TRACE_ID}-{'0' * 16}-01",  # an all-zero span id
    f"ff-{INCOMING_TRACE_ID}-{INCOMING_SPAN_ID}-01",  # the forbidden version
    INCOMING.upper(),  # upper-case hex
]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


@pytest.fixture
async def app(isolated_url: str) -> AsyncIterator[Starlette]:
    """The app on a database of this test alone: the fan-out takes every event."""
    application = create_app(make_settings(isolated_url, WEBHOOKS_MIN_BACKOFF_MS=0))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def api(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
async def auth(app: Starlette) -> dict[str, str]:
    created = await create_client(app.state.db, "traced client")
    return {"Authorization": f"Bearer {created['api_key']}", "client-id": created["id"]}


@pytest.fixture
async def deliverer(app: Starlette) -> AsyncIterator[Deliverer]:
    settings = app.state.settings
    http = create_transport(allow_private_targets=True)
    yield Deliverer(db=app.state.db, http=http, settings=settings)
    await http.aclose()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as exporter:
        yield exporter


async def _config(app: Starlette, auth: dict[str, str], receiver: Receiver) -> dict[str, Any]:
    return await new_config(app.state.db, auth["client-id"], url=receiver.url(FLAKY))


async def _create_survey(
    api: httpx.AsyncClient, auth: dict[str, str], **headers: str
) -> dict[str, Any]:
    response = await api.post(
        "/api/v2/surveys", json={"patient_id": "p-1"}, headers={**_key(auth), **headers}
    )
    assert response.status_code == 201, response.text
    survey: dict[str, Any] = response.json()
    return survey


def _key(auth: dict[str, str]) -> dict[str, str]:
    return {"Authorization": auth["Authorization"]}


async def _deliver_until_delivered(db: Database, deliverer: Deliverer, receiver: Receiver) -> None:
    """Fan the events out, then attempt their one delivery until the receiver takes it
    (two failures first), the back-off skipped."""
    fanout = await fan_out_batch(db, batch_size=100)
    [delivery_id] = fanout.pending_ids
    for _ in range(3):
        await deliverer.deliver(delivery_id)
        await make_due(db, delivery_id)
    assert len(receiver.at(FLAKY)) == 3


async def test_the_incoming_trace_reaches_every_attempt_with_a_new_span_id(
    app: Starlette,
    api: httpx.AsyncClient,
    auth: dict[str, str],
    receiver: Receiver,
    deliverer: Deliverer,
) -> None:
    await _config(app, auth, receiver)

    await _create_survey(api, auth, traceparent=INCOMING)
    await _deliver_until_delivered(app.state.db, deliverer, receiver)

    sent = [parsed(hit.headers["traceparent"]) for hit in receiver.at(FLAKY)]
    assert {each.trace_id for each in sent} == {INCOMING_TRACE_ID}
    span_ids = [each.span_id for each in sent]
    assert len(set(span_ids)) == 3
    assert INCOMING_SPAN_ID not in span_ids
    # The caller sampled its trace: the receiver may record its part of it.
    assert all(each.sampled for each in sent)


async def test_without_a_traceparent_the_service_starts_a_trace(
    app: Starlette,
    api: httpx.AsyncClient,
    auth: dict[str, str],
    receiver: Receiver,
    deliverer: Deliverer,
) -> None:
    await _config(app, auth, receiver)

    await _create_survey(api, auth)
    await _deliver_until_delivered(app.state.db, deliverer, receiver)

    sent = [parsed(hit.headers["traceparent"]) for hit in receiver.at(FLAKY)]
    assert len({each.trace_id for each in sent}) == 1
    assert len({each.span_id for each in sent}) == 3
    # Not exporting, the service records nothing, and says so.
    assert not any(each.sampled for each in sent)
    [event] = await outbox_rows(app.state.db, auth["client-id"])
    assert parsed(event["traceparent"]).trace_id == sent[0].trace_id


@pytest.mark.parametrize("invalid", INVALID)
async def test_an_invalid_traceparent_is_ignored(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str], invalid: str
) -> None:
    await _create_survey(api, auth, traceparent=invalid)

    [event] = await outbox_rows(app.state.db, auth["client-id"])
    stored = parsed(event["traceparent"])
    assert stored.trace_id not in (INCOMING_TRACE_ID, "0" * 32)


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotency-key"])
async def test_both_survey_writes_store_the_request_trace(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str], idempotent: bool
) -> None:
    """POST and PATCH, with and without an `Idempotency-Key` (whose writes run as a unit,
    on SQLite on the writer's thread: the trace is taken from the request first)."""
    keys = [{"Idempotency-Key": f"key-{n}"} if idempotent else {} for n in range(2)]
    survey = await _create_survey(api, auth, traceparent=INCOMING, **keys[0])
    completing = f"00-{'ab' * 16}-{'cd' * 8}-01"
    response = await api.patch(
        f"/api/v2/surveys/{survey['id']}",
        json={"status": "completed"},
        headers={**_key(auth), "traceparent": completing, **keys[1]},
    )
    assert response.status_code == 200, response.text

    created, finished = await outbox_rows(app.state.db, auth["client-id"])
    assert parsed(created["traceparent"]).trace_id == INCOMING_TRACE_ID
    assert parsed(finished["traceparent"]).trace_id == "ab" * 16


async def test_a_ping_is_in_the_trace_of_its_request(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str], receiver: Receiver
) -> None:
    config = await _config(app, auth, receiver)

    response = await api.post(
        f"/api/v2/config/webhook/{config['id']}/ping",
        headers={**_key(auth), "traceparent": INCOMING},
    )

    assert response.status_code == 202, response.text
    ping = await delivery(app.state.db, response.json()["delivery_id"])
    assert parsed(ping["traceparent"]).trace_id == INCOMING_TRACE_ID


async def test_spans_of_the_request_the_fan_out_and_each_attempt(
    app: Starlette,
    api: httpx.AsyncClient,
    auth: dict[str, str],
    receiver: Receiver,
    deliverer: Deliverer,
    spans: InMemorySpanExporter,
) -> None:
    config = await _config(app, auth, receiver)

    await _create_survey(api, auth, traceparent=INCOMING)
    await _deliver_until_delivered(app.state.db, deliverer, receiver)

    [request] = _named(spans, "POST /api/v2/surveys")
    assert request.kind == SpanKind.SERVER
    assert request.parent is not None and request.parent.is_remote
    assert f"{request.parent.span_id:016x}" == INCOMING_SPAN_ID
    assert f"{request.context.trace_id:032x}" == INCOMING_TRACE_ID
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 201
    assert request.attributes["http.route"] == "/api/v2/surveys"
    [fanout] = _named(spans, FANOUT_SPAN)
    assert fanout.parent is None
    assert [link.context.span_id for link in fanout.links] == [request.context.span_id]
    assert fanout.attributes == {"webhooks.events": 1, "webhooks.deliveries": 1, "webhooks.held": 0}
    attempts = _named(spans, ATTEMPT_SPAN)
    sent = [parsed(hit.headers["traceparent"]) for hit in receiver.at(FLAKY)]
    assert [f"{span.context.span_id:016x}" for span in attempts] == [s.span_id for s in sent]
    for span, status_code in zip(attempts, [500, 500, 200], strict=True):
        assert span.kind == SpanKind.CLIENT
        assert span.parent is not None and span.parent.span_id == request.context.span_id
        assert span.attributes is not None
        assert span.attributes["http.response.status_code"] == status_code
        assert span.attributes["webhooks.config_id"] == config["id"]
        assert span.attributes["webhooks.delivery_id"] == receiver.at(FLAKY)[0].webhook_id
        assert span.attributes["webhooks.event_type"] == "survey_created"
        failed = status_code >= 300
        assert (span.status.status_code == StatusCode.ERROR) is failed


async def test_a_failed_connection_is_an_attempt_span_with_its_error(
    app: Starlette,
    api: httpx.AsyncClient,
    auth: dict[str, str],
    deliverer: Deliverer,
    spans: InMemorySpanExporter,
) -> None:
    closed = Receiver()  # never started: nothing listens on its port
    await new_config(app.state.db, auth["client-id"], url=closed.url("/nobody"))
    await _create_survey(api, auth)
    [delivery_id] = (await fan_out_batch(app.state.db, batch_size=100)).pending_ids

    await deliverer.deliver(delivery_id)

    [span] = _named(spans, ATTEMPT_SPAN)
    assert span.attributes is not None
    assert span.attributes["error.type"] == "connect_error"
    assert "http.response.status_code" not in span.attributes
    assert span.status.status_code == StatusCode.ERROR


async def test_probes_have_no_span_and_other_requests_are_named_by_route(
    api: httpx.AsyncClient, auth: dict[str, str], spans: InMemorySpanExporter
) -> None:
    assert (await api.get("/healthz")).status_code == 200
    missing = "/api/v2/surveys/0b7e2b4e-2d1c-4c61-9d0a-3b0b1c2d3e4f"
    assert (await api.get(missing, headers=_key(auth))).status_code == 404

    [span] = spans.get_finished_spans()
    assert span.name == "GET /api/v2/surveys/{survey_id}"
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 404
    assert span.status.status_code == StatusCode.UNSET


def _named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in spans.get_finished_spans() if span.name == name]
