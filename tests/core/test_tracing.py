"""`core.tracing`: spans are exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT`
is set (to a fake collector here, a real HTTP server on 127.0.0.1), and not at all
otherwise, where spans still have the real ids a `traceparent` needs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core.settings import Settings, SettingsError, load_settings
from core.tracing import (
    configure_tracing,
    current_traceparent,
    parent_context,
    silent_provider,
    tracer,
    tracing_provider,
    use_provider,
)
from tests.conftest import make_settings
from tests.tracing import INCOMING, INCOMING_TRACE_ID, parsed

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"


@dataclass
class Collector:
    """A fake OTLP/HTTP collector: keeps each export request's path and body."""

    requests: list[tuple[str, bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> dict[str, dict[str, str]]:
        """{span name: its resource's string attributes} of every span received."""
        found = {}
        for path, body in self.requests:
            assert path == "/v1/traces"
            export = ExportTraceServiceRequest.FromString(body)
            for resource_spans in export.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    found |= {span.name: resource for span in scope_spans.spans}
        return found


@pytest.fixture
def collector() -> Iterator[Collector]:
    collected = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            collected.requests.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    collected.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=collected.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collected
    finally:
        collected.server.shutdown()
        collected.server.server_close()


def _settings(**values: object) -> Settings:
    return make_settings("sqlite:///./unused.db", **values)


def test_with_an_endpoint_the_service_spans_reach_the_collector(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENDPOINT, collector.url)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    tracing = tracing_provider(_settings(), process="worker")
    assert tracing.exporter is not None
    use_provider(tracing.provider)
    try:
        with tracer().start_as_current_span("exported"):
            pass
        assert tracing.provider.force_flush()
    finally:
        use_provider(silent_provider())
        tracing.provider.shutdown()

    [(name, resource)] = collector.spans().items()
    assert name == "exported"
    assert resource["service.name"] == "webhooks"
    assert resource["webhooks.process"] == "worker"


def test_without_an_endpoint_nothing_is_exported_but_ids_are_real(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENDPOINT, raising=False)

    tracing = configure_tracing(_settings(), process="web")

    assert tracing.exporter is None
    assert tracing.provider is silent_provider()
    with tracer().start_as_current_span("silent") as span:
        assert not span.is_recording()
        started = current_traceparent()
    assert started is not None and not parsed(started).sampled
    # A caller's sampled trace stays sampled for the receiver (recorded into nothing).
    with tracer().start_as_current_span("child", context=parent_context(INCOMING)):
        continued = parsed(current_traceparent() or "")
    assert continued.trace_id == INCOMING_TRACE_ID and continued.sampled


def test_an_empty_endpoint_is_unset() -> None:
    assert _settings(**{ENDPOINT: ""}).otel_exporter_otlp_endpoint is None
    assert tracing_provider(_settings(**{ENDPOINT: ""}), process="web").exporter is None


@pytest.mark.parametrize("endpoint", ["collector:4318", "ftp://collector", "http://"])
def test_an_endpoint_that_is_not_an_http_url_is_refused(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENDPOINT, endpoint)

    with pytest.raises(SettingsError, match=ENDPOINT):
        load_settings()


@pytest.mark.parametrize("value", [None, "", "garbage", INCOMING.replace("-01", "-zz")])
def test_a_missing_or_invalid_traceparent_has_no_parent(value: str | None) -> None:
    assert parent_context(value) is None
