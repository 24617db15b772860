"""The soak's arithmetic: the marks and the sampling schedule, the figure at each mark,
the change and the flatness verdict, CPU share, losses."""

from __future__ import annotations

import pytest

from bench.sampling import Marks, Sample, marks, schedule
from bench.soak_report import Points, SoakReport, cpu_percent, points, soak_json


def sample(at_s: float, rss: float | None, *, cpu: float = 0.0, name: str = "web") -> Sample:
    return Sample(at_s, {name: rss}, {name: 10}, {name: cpu})


def test_the_warm_up_is_a_tenth_of_the_run_and_at_most_30_s() -> None:
    assert marks(60.0) == Marks(6.0, 33.0, 60.0)
    assert marks(600.0) == Marks(30.0, 315.0, 600.0)


def test_the_schedule_holds_every_interval_and_the_marks() -> None:
    assert schedule(20.0, interval_s=5.0) == [0.0, 2.0, 5.0, 10.0, 11.0, 15.0, 20.0]


@pytest.mark.parametrize(
    ("start", "end", "change", "flat"),
    [
        (100.0, 110.0, 10.0, True),
        (100.0, 110.5, 10.5, False),
        (100.0, 85.0, -15.0, False),
        (None, 100.0, None, None),
        (0.0, 100.0, None, None),
    ],
)
def test_change_and_flatness(
    start: float | None, end: float, change: float | None, flat: bool | None
) -> None:
    figure = Points(start, None, end)

    assert figure.change_percent == (None if change is None else pytest.approx(change))
    assert figure.flat is flat


def test_each_mark_takes_the_nearest_sample() -> None:
    samples = [sample(0.0, 90.0), sample(6.0, 100.0), sample(33.0, 101.0), sample(59.0, 103.0)]

    got = points(samples, marks(60.0), lambda s: s.rss_mb["web"])

    assert got == Points(100.0, 101.0, 103.0)


def test_cpu_is_a_share_of_one_core_between_start_and_end() -> None:
    samples = [sample(6.0, 1.0, cpu=2.0), sample(60.0, 1.0, cpu=29.0)]

    assert cpu_percent(samples, marks(60.0), "web") == pytest.approx(50.0)


def test_losses_and_verdicts_of_a_run() -> None:
    report = SoakReport("serve", "sqlite", fanout=10, rate_per_s=50.0, duration_s=60.0)
    report.samples = [sample(6.0, 100.0), sample(33.0, 104.0), sample(60.0, 112.0)]
    report.created, report.received = 100, 998

    summary = soak_json(1.0, [report])

    assert (report.expected, report.lost) == (1000, 2)
    assert report.flat() is False
    assert summary["lost"] == 2
    assert summary["rss_flat"] is False


def test_the_bench_s_own_processes_are_not_judged() -> None:
    report = SoakReport("serve", "sqlite", fanout=1, rate_per_s=50.0, duration_s=60.0)
    report.samples = [sample(t, rss, name="receiver") for t, rss in [(6.0, 20.0), (60.0, 40.0)]]

    assert report.flat() is None
    assert "(bench)" in report.table()
