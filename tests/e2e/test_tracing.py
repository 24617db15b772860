"""SPEC 17 across real processes: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, `webhooks
serve` (SQLite) and the Procfile's web, poller and worker (PostgreSQL, Redis) export their
spans to a collector (a fake one, a real HTTP server), and the trace started by the
caller's `traceparent` runs from the API request through to every attempt: the receiver
gets the caller's trace id with each attempt's own span id, and that span, exported by
the worker, is a child of the web's request span."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import Stack, make_config, procfile_stack, serve_stack
from tests.receivers import Receiver
from tests.servers import RedisServer, postgres_database, wait_for
from tests.tracing import (
    INCOMING,
    INCOMING_SPAN_ID,
    INCOMING_TRACE_ID,
    Collector,
    Exported,
    parsed,
    running_collector,
)

pytestmark = pytest.mark.e2e

# The batch span processor's delay before an export, in ms: short, so spans arrive soon.
EXPORT_DELAY_MS = "100"
SERVER, CLIENT = 2, 3  # OTLP's span kinds


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


@pytest.fixture
def collector() -> Iterator[Collector]:
    with running_collector() as running:
        yield running


@pytest.fixture(params=["serve", "procfile_pg"])
def stack(
    request: pytest.FixtureRequest, collector: Collector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("traced")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": EXPORT_DELAY_MS}
    if request.param == "serve":
        with serve_stack(f"sqlite:///{log_dir / 'webhooks.db'}", log_dir, **env) as stack:
            yield stack
        return
    redis: RedisServer = request.getfixturevalue("redis")
    with postgres_database() as url, procfile_stack(url, redis.url, log_dir, **env) as stack:
        yield stack


def _processes(stack: Stack) -> dict[str, str]:
    """Which process exports each kind of span."""
    if "serve" in stack.processes:
        return dict.fromkeys(("request", "fan-out", "attempt"), "serve")
    return {"request": "web", "fan-out": "poller", "attempt": "worker"}


def test_one_trace_from_the_request_to_every_attempt_is_exported(
    stack: Stack, receiver: Receiver, collector: Collector
) -> None:
    # Given a configuration whose receiver fails the first attempt
    headers = stack.new_client("traced")
    path = f"/flaky/1/{stack.port}/traced"
    with stack.api() as api:
        make_config(api, headers, receiver.url(path))

        # When a survey is created with the caller's trace context
        response = api.post(
            "/api/v2/surveys",
            json={"patient_id": "p"},
            headers={**headers, "traceparent": INCOMING},
        )
        assert response.status_code == 201, response.text

    # Then both attempts carry the caller's trace id, each with a span id of its own
    sent = [parsed(hit.headers["traceparent"]) for hit in receiver.wait(path, 2)]
    assert {each.trace_id for each in sent} == {INCOMING_TRACE_ID}
    assert len({each.span_id for each in sent}) == 2
    # and the spans of the request, the fan-out and both attempts reach the collector
    spans = _wait_for_spans(collector, attempts=2)
    processes = _processes(stack)
    [request] = [span for span in spans if span.name == "POST /api/v2/surveys"]
    assert (request.kind, request.trace_id) == (SERVER, INCOMING_TRACE_ID)
    assert request.parent_span_id == INCOMING_SPAN_ID
    assert request.resource["webhooks.process"] == processes["request"]
    assert {
        span.resource["webhooks.process"] for span in spans if span.name == "outbox fan-out"
    } == {processes["fan-out"]}
    attempts = sorted(
        (span for span in spans if span.name == "webhook POST"),
        key=lambda span: [each.span_id for each in sent].index(span.span_id),
    )
    assert [span.attributes["http.response.status_code"] for span in attempts] == [500, 200]
    for span in attempts:
        assert (span.kind, span.trace_id) == (CLIENT, INCOMING_TRACE_ID)
        assert span.parent_span_id == request.span_id
        assert span.resource["webhooks.process"] == processes["attempt"]


def _wait_for_spans(collector: Collector, *, attempts: int) -> list[Exported]:
    def arrived() -> list[Exported] | None:
        spans = collector.spans()
        names = [span.name for span in spans]
        done = names.count("webhook POST") >= attempts and "outbox fan-out" in names
        return spans if done and "POST /api/v2/surveys" in names else None

    found: list[Exported] = wait_for(arrived, timeout_s=30, what="the spans at the collector")
    return found
