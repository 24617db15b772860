"""`core.tracing`: spans are exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT`
is set (to a fake collector here, a real HTTP server on 127.0.0.1), and not at all
otherwise, where spans still have the real ids a `traceparent` needs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
from tests.tracing import INCOMING, INCOMING_TRACE_ID, Collector, parsed, running_collector

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"


@pytest.fixture
def collector() -> Iterator[Collector]:
    with running_collector() as running:
        yield running


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

    [span] = collector.spans()
    assert span.name == "exported"
    assert span.resource["service.name"] == "webhooks"
    assert span.resource["webhooks.process"] == "worker"


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
