"""The back-off curve of SPEC 7, its jitter and `Retry-After`."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from core.clock import utcnow
from core.settings import DEFAULT_MAX_BACKOFF_MS, DEFAULT_MIN_BACKOFF_MS
from workers.backoff import backoff_ms, jittered_ms, next_delay_ms, retry_after_ms

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HOUR_MS = 60 * 60 * 1000

# attempt that failed -> wait before the next one, with the defaults (5 s, 10 h)
DEFAULT_CURVE = [
    (1, 5_000),
    (2, 20_000),
    (3, 80_000),
    (4, 320_000),
    (5, 1_280_000),
    (6, 5_120_000),
    (7, 20_480_000),
    (8, 36_000_000),
    (9, 36_000_000),
    (10, 36_000_000),
]


def _curve(attempt: int) -> int:
    return backoff_ms(
        attempt, min_backoff_ms=DEFAULT_MIN_BACKOFF_MS, max_backoff_ms=DEFAULT_MAX_BACKOFF_MS
    )


@pytest.mark.parametrize(("attempt", "expected_ms"), DEFAULT_CURVE)
def test_default_curve(attempt: int, expected_ms: int) -> None:
    assert _curve(attempt) == expected_ms


def test_ten_attempts_span_about_28_hours() -> None:
    # Ten attempts have nine waits between them.
    total_ms = sum(_curve(attempt) for attempt in range(1, 10))

    assert total_ms == 99_305_000
    assert 27 * HOUR_MS < total_ms < 28 * HOUR_MS


def test_huge_attempt_numbers_are_capped_cheaply() -> None:
    assert _curve(10**12) == DEFAULT_MAX_BACKOFF_MS
    assert backoff_ms(10**12, min_backoff_ms=0, max_backoff_ms=0) == 0


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError):
        _curve(0)


def test_jitter_stays_within_20_percent_and_spreads() -> None:
    rng = random.Random(1234)
    samples = [jittered_ms(10_000, rng=rng) for _ in range(10_000)]

    assert min(samples) >= 8_000
    assert max(samples) <= 12_000
    # Spread over the whole range, not bunched at the delay.
    assert min(samples) < 8_100
    assert max(samples) > 11_900
    assert 9_900 < sum(samples) / len(samples) < 10_100


def test_jitter_without_a_rng() -> None:
    assert 800 <= jittered_ms(1_000) <= 1_200
    assert jittered_ms(0) == 0


@pytest.mark.parametrize(
    ("value", "expected_ms"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("0", 0),
        ("120", 120_000),
        (" 30 ", 30_000),
        ("Sat, 01 Mar 2025 12:01:00 GMT", 60_000),
        ("Sat, 01 Mar 2025 12:00:30 -0000", 30_000),
        ("Sat, 01 Mar 2025 11:00:00 GMT", 0),
        ("Sat, 32 Mar 2025 12:00:00 GMT", None),
    ],
)
def test_retry_after(value: str | None, expected_ms: int | None) -> None:
    assert retry_after_ms(value, now=NOW) == expected_ms


@freeze_time("2025-03-01T12:00:00Z")
def test_retry_after_http_date_is_relative_to_the_clock() -> None:
    in_ten_minutes = "Sat, 01 Mar 2025 12:10:00 GMT"

    assert retry_after_ms(in_ten_minutes, now=utcnow()) == 10 * 60 * 1000


def _next(
    attempt: int,
    *,
    status_code: int | None,
    retry_after: str | None,
    max_backoff_ms: int = DEFAULT_MAX_BACKOFF_MS,
) -> int:
    return next_delay_ms(
        attempt,
        status_code=status_code,
        retry_after=retry_after,
        min_backoff_ms=DEFAULT_MIN_BACKOFF_MS,
        max_backoff_ms=max_backoff_ms,
        now=NOW,
        rng=random.Random(7),
    )


@pytest.mark.parametrize("status_code", [429, 503])
def test_retry_after_is_honoured_on_429_and_503(status_code: int) -> None:
    assert _next(1, status_code=status_code, retry_after="600") == 600_000
    assert _next(5, status_code=status_code, retry_after="1") == 1_000


@pytest.mark.parametrize("status_code", [429, 503])
def test_retry_after_is_capped_at_the_maximum(status_code: int) -> None:
    far = (NOW + timedelta(days=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")

    assert _next(1, status_code=status_code, retry_after=far) == DEFAULT_MAX_BACKOFF_MS
    assert _next(1, status_code=status_code, retry_after="999999999999") == (DEFAULT_MAX_BACKOFF_MS)


@pytest.mark.parametrize(
    ("status_code", "retry_after"),
    [(500, "600"), (200, "600"), (None, "600"), (429, None), (503, "whenever")],
)
def test_otherwise_the_jittered_curve(status_code: int | None, retry_after: str | None) -> None:
    delay_ms = _next(3, status_code=status_code, retry_after=retry_after)

    assert 0.8 * 80_000 <= delay_ms <= 1.2 * 80_000


def test_next_delay_is_bounded() -> None:
    rng = random.Random(99)
    for attempt in range(1, 60):
        delay_ms = next_delay_ms(
            attempt,
            status_code=None,
            retry_after=None,
            min_backoff_ms=DEFAULT_MIN_BACKOFF_MS,
            max_backoff_ms=DEFAULT_MAX_BACKOFF_MS,
            now=NOW,
            rng=rng,
        )
        assert 0 <= delay_ms <= 1.2 * DEFAULT_MAX_BACKOFF_MS
