"""Tracing helpers for tests: spans recorded in memory, and `traceparent` values."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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
