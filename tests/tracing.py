"""Tracing helpers for tests: spans recorded in memory, a fake OTLP/HTTP collector
(a real HTTP server on 127.0.0.1), and `traceparent` values."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.tracing import silent_provider, use_provider

# W3C trace context, version 00: lower-case hex, neither id all zeros.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
INCOMING_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_SPAN_ID = "00f067aa0ba902b7"
INCOMING = f"00-{INCOMING_TRACE_ID}-{INCOMING_SPAN_ID}-01"


@dataclass(frozen=True)
class TraceParent:
    trace_id: str
    span_id: str
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)


def parsed(value: str) -> TraceParent:
    """`value` as a valid W3C `traceparent`; fails the test if it is not one."""
    match = _TRACEPARENT.fullmatch(value)
    assert match is not None, f"not a W3C traceparent: {value!r}"
    trace_id, span_id, flags = match.groups()
    assert trace_id != "0" * 32 and span_id != "0" * 16, value
    return TraceParent(trace_id, span_id, int(flags, 16))


@contextmanager
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """The service's spans, recorded (sampled as OpenTelemetry's SDK samples by default)
    into the exporter yielded; the silent provider again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_provider(provider)
    try:
        yield exporter
    finally:
        use_provider(silent_provider())
        provider.shutdown()


@dataclass(frozen=True)
class Exported:
    """A span as an OTLP export request carried it; ids in lower-case hex."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, object]
    resource: dict[str, object]


@dataclass
class Collector:
    """A fake OTLP/HTTP collector: keeps each export request's path and body."""

    url: str = ""
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spans(self) -> list[Exported]:
        """Every span received so far; fails on a request to another path than OTLP's."""
        with self.lock:
            requests = list(self.requests)
        found = []
        for path, body in requests:
            assert path == "/v1/traces", path
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                resource = _values(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    found += [_exported(span, resource) for span in scope_spans.spans]
        return found


def _values(attributes: Iterable[Any]) -> dict[str, object]:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in attributes}


def _exported(span: Any, resource: dict[str, object]) -> Exported:
    return Exported(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        kind=span.kind,
        attributes=_values(span.attributes),
        resource=resource,
    )


@contextmanager
def running_collector() -> Iterator[Collector]:
    """A `Collector` listening on 127.0.0.1 (its `url`) until the block ends."""
    collector = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with collector.lock:
                collector.requests.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    collector.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        server.shutdown()
        server.server_close()
