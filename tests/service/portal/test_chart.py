"""The 24-hour chart's geometry: stacked bars by outcome, a readable scale."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.portal.chart import HEIGHT, OUTCOMES, hourly_chart, nice_ceiling

T0 = datetime(2026, 1, 5, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (3, 5), (7, 10), (10, 10), (11, 20), (450, 500)]
)
def test_nice_ceiling(value: int, ceiling: int) -> None:
    assert nice_ceiling(value) == ceiling


def test_bars_stack_by_outcome_and_scale_to_the_busiest_hour() -> None:
    hours = [(T0 + timedelta(hours=n), {}) for n in range(24)]
    hours[5] = (hours[5][0], {"delivered": 6, "failed": 2, "cancelled": 9})
    hours[23] = (hours[23][0], {"pending": 1, "held": 1})

    chart = hourly_chart(hours)

    busy = chart.columns[5]
    assert [bar.outcome for bar in busy.bars] == ["delivered", "failed"]
    delivered, failed = busy.bars
    assert failed.y + failed.height == pytest.approx(delivered.y)  # stacked
    assert delivered.y + delivered.height == chart.baseline
    assert delivered.height == pytest.approx(3 * failed.height)
    assert chart.ticks[-1].label == "10" and chart.ticks[0].label == "0"
    assert [bar.outcome for bar in chart.columns[23].bars] == ["pending", "held"]
    assert chart.columns[0].bars == []
    assert chart.totals == {"delivered": 6, "failed": 2, "pending": 1, "held": 1}
    assert "6 delivered, 2 failed" in busy.title and "05:00 to 06:00 UTC" in busy.title
    assert all(0 <= bar.y <= HEIGHT for column in chart.columns for bar in column.bars)
    assert [c.label for c in chart.columns if c.label] == [
        "00h",
        "03h",
        "06h",
        "09h",
        "12h",
        "15h",
        "18h",
        "21h",
    ]


def test_an_empty_day_draws_no_bar() -> None:
    chart = hourly_chart([(T0 + timedelta(hours=n), {}) for n in range(24)])

    assert all(not column.bars for column in chart.columns)
    assert chart.totals == dict.fromkeys(OUTCOMES, 0)
