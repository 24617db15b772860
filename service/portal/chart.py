"""The geometry of the 24-hour chart: stacked bars of deliveries per hour by outcome,
computed here and drawn as SVG by the `chart.html` template (no script, no library)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.lifecycle import Status

# Stacked bottom-up; cancelled deliveries are left out (nothing was wrong with them).
OUTCOMES = (Status.DELIVERED, Status.FAILED, Status.PENDING, Status.HELD)
WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 10, 26  # margins around the plot, for the axes' labels
LABEL_EVERY_H = 3


@dataclass(frozen=True)
class Bar:
    outcome: str
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Column:
    start: datetime
    counts: dict[str, int]
    bars: list[Bar]
    label: str | None  # the hour under the axis, every few columns
    label_x: float

    @property
    def title(self) -> str:
        end = self.start + timedelta(hours=1)
        parts = [f"{self.counts.get(o, 0)} {o}" for o in OUTCOMES if self.counts.get(o)]
        what = ", ".join(parts) or "no deliveries"
        return f"{self.start:%H:%M} to {end:%H:%M} UTC: {what}"


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    columns: list[Column]
    ticks: list[Tick]
    totals: dict[str, int]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    baseline: int = HEIGHT - BOTTOM

    @property
    def summary(self) -> str:
        parts = [f"{self.totals[o]} {o}" for o in OUTCOMES]
        return "Deliveries per hour over the last 24 hours: " + ", ".join(parts) + "."


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^k at least `value` (and at least 1)."""
    if value <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(value)))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def hourly_chart(hours: list[tuple[datetime, dict[str, int]]]) -> Chart:
    top = nice_ceiling(max((sum(c.get(o, 0) for o in OUTCOMES) for _, c in hours), default=0))
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(hours))
    gap = min(4.0, slot / 5)
    columns = []
    for index, (start, counts) in enumerate(hours):
        x = LEFT + index * slot + gap / 2
        y = float(HEIGHT - BOTTOM)
        bars = []
        for outcome in OUTCOMES:
            height = counts.get(outcome, 0) / top * plot_height
            if height > 0:
                y -= height
                bars.append(
                    Bar(outcome, round(x, 2), round(y, 2), round(slot - gap, 2), round(height, 2))
                )
        label = f"{start:%H}h" if index % LABEL_EVERY_H == 0 else None
        columns.append(Column(start, counts, bars, label, round(x + (slot - gap) / 2, 2)))
    ticks = [
        Tick(round(HEIGHT - BOTTOM - fraction * plot_height, 2), f"{round(top * fraction):,}")
        for fraction in (0, 0.5, 1)
        if fraction == 0 or top * fraction == int(top * fraction)
    ]
    totals = {str(o): sum(c.get(o, 0) for _, c in hours) for o in OUTCOMES}
    return Chart(columns, ticks, totals)
