"""Percentiles of latency samples, and nothing else: a module a reader checks at a glance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Percentiles:
    """Milliseconds; None when there was no sample."""

    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    samples: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def percentile(sorted_samples: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (NumPy's default)."""
    position = (len(sorted_samples) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    weight = position - low
    return sorted_samples[low] * (1 - weight) + sorted_samples[high] * weight


def percentiles(samples: Sequence[float]) -> Percentiles:
    if not samples:
        return Percentiles(None, None, None, None, 0)
    ordered = sorted(samples)
    return Percentiles(
        p50=percentile(ordered, 0.50),
        p95=percentile(ordered, 0.95),
        p99=percentile(ordered, 0.99),
        max=ordered[-1],
        samples=len(ordered),
    )
