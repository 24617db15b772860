"""When to try a failed delivery again (SPEC 7).

The wait before attempt n+1, after attempt n failed, is
`min(max_backoff_ms, min_backoff_ms * 4**(n-1))`, spread by +-20% jitter so that the
deliveries a receiver's outage failed together do not all return together. With the
defaults (5 s, 10 h, 10 attempts) the nine waits add up to about 27.6 hours:

    5 s, 20 s, 80 s, 320 s, 1280 s, 5120 s, 20480 s, 10 h, 10 h

A 429 or 503 with a valid `Retry-After` is honoured instead, up to `max_backoff_ms`.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

JITTER = 0.2
RETRY_AFTER_STATUSES = frozenset({429, 503})

_rng = random.Random()


def backoff_ms(attempt: int, *, min_backoff_ms: int, max_backoff_ms: int) -> int:
    """The un-jittered wait after attempt `attempt` (1-based) failed.

    >>> [backoff_ms(n, min_backoff_ms=5_000, max_backoff_ms=100_000) for n in (1, 2, 3, 4)]
    [5000, 20000, 80000, 100000]
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    # 4**k > max_backoff_ms once k reaches its bit length, so a larger exponent cannot
    # change the result; capping it keeps attempt 10**9 from building a huge integer.
    exponent = min(attempt - 1, max_backoff_ms.bit_length())
    growth: int = 4**exponent
    return min(max_backoff_ms, min_backoff_ms * growth)


def jittered_ms(delay_ms: int, *, rng: random.Random | None = None) -> int:
    """`delay_ms` times a factor drawn uniformly from [0.8, 1.2]; never negative."""
    factor = (rng or _rng).uniform(1 - JITTER, 1 + JITTER)
    return max(0, round(delay_ms * factor))


def retry_after_ms(value: str | None, *, now: datetime) -> int | None:
    """The wait a `Retry-After` header asks for: delta-seconds (`120`) or an HTTP-date
    (`Wed, 21 Oct 2015 07:28:00 GMT`, relative to `now`). None if absent or invalid;
    a date in the past means 0."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return int(value) * 1000
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    delta_s = (_aware(when) - _aware(now)).total_seconds()
    return max(0, round(delta_s * 1000))


def next_delay_ms(
    attempt: int,
    *,
    status_code: int | None,
    retry_after: str | None,
    min_backoff_ms: int,
    max_backoff_ms: int,
    now: datetime,
    rng: random.Random | None = None,
) -> int:
    """The wait before the attempt after `attempt` failed with `status_code` (None when
    no reply came). In [0, 1.2 * max_backoff_ms]."""
    if status_code in RETRY_AFTER_STATUSES:
        asked_ms = retry_after_ms(retry_after, now=now)
        if asked_ms is not None:
            return min(asked_ms, max_backoff_ms)
    delay_ms = backoff_ms(attempt, min_backoff_ms=min_backoff_ms, max_backoff_ms=max_backoff_ms)
    return jittered_ms(delay_ms, rng=rng)


def _aware(moment: datetime) -> datetime:
    # An HTTP-date with a "-0000" zone parses naive; HTTP-dates are always UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
