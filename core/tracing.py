"""Tracing (SPEC 17): OpenTelemetry spans and the W3C `traceparent` that an event
carries from the request that caused it to every attempt to deliver it.

- `configure_tracing(settings, process=...)`, once per process at start-up: spans are
  exported over OTLP/HTTP (a `BatchSpanProcessor`) when `OTEL_EXPORTER_OTLP_ENDPOINT`
  is set, and not at all otherwise.
- `tracer()`: the tracer every span of the service is started with.
- `traceparent(span)` and `parent_context(traceparent)`: a span's context as the
  `traceparent` value stored with an event and its deliveries, and back. Only the W3C
  trace context propagator is used, whatever `OTEL_PROPAGATORS` says: SPEC names it.

Without an exporter a trace still needs real ids: every attempt sends a `traceparent`
with a span id of its own. So the SDK's `TracerProvider` is always installed, with no
span processor and a sampler that records nothing the service starts itself
(`ParentBased(ALWAYS_OFF)`): its spans are `NonRecordingSpan`s with fresh ids and the
`sampled` flag cleared, which cost a few microseconds. A caller's sampled trace stays
sampled, so that a receiver that samples by its parent records its part of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from core.settings import Settings

TRACER_NAME = "webhooks"
TRACEPARENT = "traceparent"
# The service's name in exported spans unless OTEL_SERVICE_NAME says otherwise; the
# process (web, poller, worker, serve) is the `webhooks.process` resource attribute.
DEFAULT_SERVICE_NAME = "webhooks"

_PROPAGATOR = TraceContextTextMapPropagator()
# Not exporting: real ids, nothing recorded (see the module docstring).
_SILENT = TracerProvider(sampler=ParentBased(root=ALWAYS_OFF), shutdown_on_exit=False)
_tracer: trace.Tracer = _SILENT.get_tracer(TRACER_NAME)


@dataclass(frozen=True)
class Tracing:
    """What `configure_tracing` set up: the provider, and the exporter (None: spans
    are not exported)."""

    provider: TracerProvider
    exporter: SpanExporter | None


def tracing_provider(settings: Settings, *, process: str) -> Tracing:
    """A provider for `process`: with `settings.otel_exporter_otlp_endpoint`, an OTLP/HTTP
    exporter behind a `BatchSpanProcessor` and the SDK's sampler (`OTEL_TRACES_SAMPLER`,
    parent-based always-on by default); without it, no exporter and nothing recorded."""
    if not settings.otel_exporter_otlp_endpoint:
        return Tracing(_SILENT, None)
    # Imported only when exporting: it pulls in protobuf and requests.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    name = os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    resource = Resource.create({SERVICE_NAME: name, "webhooks.process": process})
    provider = TracerProvider(resource=resource)
    # The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (appending /v1/traces) and the other
    # OTEL_EXPORTER_OTLP_* variables itself, as OpenTelemetry documents them.
    exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider, exporter)


def configure_tracing(settings: Settings, *, process: str) -> Tracing:
    """Set up tracing for this process, once, at start-up: `tracing_provider`, made the
    service's and OpenTelemetry's global provider. An exporting provider flushes its
    spans when the process exits."""
    tracing = tracing_provider(settings, process=process)
    use_provider(tracing.provider)
    trace.set_tracer_provider(tracing.provider)
    return tracing


def use_provider(provider: trace.TracerProvider) -> None:
    """Start the service's spans with `provider` from now on (tests give one that
    records into memory)."""
    global _tracer
    _tracer = provider.get_tracer(TRACER_NAME)


def silent_provider() -> TracerProvider:
    """The provider used when not exporting: ids, no recording."""
    return _SILENT


def tracer() -> trace.Tracer:
    """The tracer of the service's spans."""
    return _tracer


def inject(headers: dict[str, str], span: trace.Span) -> None:
    """Add `span`'s W3C trace context to `headers` (`traceparent`, and `tracestate` when
    it has one); nothing for an invalid (no-op) span."""
    _PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))


def traceparent(span: trace.Span) -> str | None:
    """The W3C `traceparent` of `span`'s context, None for an invalid (no-op) span."""
    carrier: dict[str, str] = {}
    inject(carrier, span)
    return carrier.get(TRACEPARENT)


def current_traceparent() -> str | None:
    """The `traceparent` of the current span (the request's, in the API), or None."""
    return traceparent(trace.get_current_span())


def parent_context(traceparent: str | None) -> Context | None:
    """The context whose remote parent `traceparent` names; None (a new trace) for a
    missing or invalid value, which W3C says to ignore."""
    if not traceparent:
        return None
    context = _PROPAGATOR.extract({TRACEPARENT: traceparent})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def links(traceparents: Iterable[str | None]) -> list[trace.Link]:
    """A link to each valid, distinct `traceparent` (a fan-out batch's events)."""
    found = []
    for value in dict.fromkeys(traceparents):
        context = parent_context(value)
        if context is not None:
            found.append(trace.Link(trace.get_current_span(context).get_span_context()))
    return found
