"""The figures of one soak run (`python -m bench --soak MINUTES`): per process, memory
and open file descriptors at the three marks (after the warm-up, the middle, the end of
the load) and its CPU in between; for the run, what was created, expected, received,
lost and repeated. A table for people, one JSON object for machines."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.report import columns, rounded
from bench.sampling import Marks, Sample, marks

FLAT_PERCENT = 10.0
BENCH_SIDE = ("receiver", "bench")
"""Processes of the bench itself: shown, not judged (the receiver keeps every delivery)."""


@dataclass(frozen=True)
class Points:
    """One figure at the three marks; None where it could not be read."""

    start: float | None
    middle: float | None
    end: float | None

    @property
    def change_percent(self) -> float | None:
        """From the start to the end, in % of the start.

        >>> Points(100.0, 104.0, 108.0).change_percent
        8.0
        """
        if self.start is None or self.end is None or self.start <= 0:
            return None
        return (self.end - self.start) / self.start * 100

    @property
    def flat(self) -> bool | None:
        """Within `FLAT_PERCENT` of the start at the end, either way."""
        change = self.change_percent
        return None if change is None else abs(change) <= FLAT_PERCENT

    def as_list(self, digits: int = 1) -> list[float | None]:
        return [rounded(v, digits) for v in (self.start, self.middle, self.end)]


def nearest(samples: Sequence[Sample], at_s: float) -> Sample | None:
    """The sample taken closest to `at_s`, None without samples."""
    return min(samples, key=lambda s: abs(s.at_s - at_s), default=None)


def points(samples: Sequence[Sample], at: Marks, read: Callable[[Sample], float | None]) -> Points:
    """`read(sample)` at each mark, from the sample nearest to it."""

    def value(at_s: float) -> float | None:
        sample = nearest(samples, at_s)
        return None if sample is None else read(sample)

    return Points(value(at.start), value(at.middle), value(at.end))


def cpu_percent(samples: Sequence[Sample], at: Marks, name: str) -> float | None:
    """CPU of `name` from the start mark to the end, in % of one core."""
    first, last = nearest(samples, at.start), nearest(samples, at.end)
    if first is None or last is None or last.at_s <= first.at_s:
        return None
    before, after = first.cpu_s.get(name), last.cpu_s.get(name)
    if before is None or after is None:
        return None
    return (after - before) / (last.at_s - first.at_s) * 100


@dataclass
class SoakReport:
    topology: str
    database: str
    fanout: int
    rate_per_s: float
    duration_s: float
    samples: list[Sample] = field(default_factory=list)
    created: int = 0
    received: int = 0
    repeated: int = 0
    api_errors: dict[str, int] = field(default_factory=dict)
    drain_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def marks(self) -> Marks:
        return marks(self.duration_s)

    @property
    def expected(self) -> int:
        return self.created * self.fanout

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    def processes(self) -> list[str]:
        return list(self.samples[0].rss_mb) if self.samples else []

    def rss(self, name: str) -> Points:
        return points(self.samples, self.marks, lambda s: s.rss_mb.get(name))

    def fds(self, name: str) -> Points:
        return points(self.samples, self.marks, lambda s: s.fds.get(name))

    def flat(self) -> bool | None:
        """The service's processes' memory, all flat (None if unknown)."""
        verdicts = [self.rss(n).flat for n in self.processes() if n not in BENCH_SIDE]
        return None if None in verdicts or not verdicts else all(verdicts)

    def _process_json(self, name: str) -> dict[str, Any]:
        rss, fds = self.rss(name), self.fds(name)
        peak = max((s.rss_mb.get(name) or 0.0 for s in self.samples), default=0.0)
        return {
            "rss_mb": rss.as_list(),
            "rss_change_percent": rounded(rss.change_percent),
            "rss_flat": rss.flat,
            "rss_peak_mb": rounded(peak),
            "fds": fds.as_list(0),
            "cpu_percent": rounded(cpu_percent(self.samples, self.marks, name)),
            "bench_side": name in BENCH_SIDE,
        }

    def as_json(self) -> dict[str, Any]:
        at = self.marks
        pg = points(self.samples, at, lambda s: s.pg_connections)
        return {
            "topology": self.topology,
            "database": self.database,
            "fanout": self.fanout,
            "rate_per_s": self.rate_per_s,
            "created_per_s": rounded(self.created / self.duration_s if self.duration_s else 0),
            "duration_s": rounded(self.duration_s),
            "marks_s": [rounded(at.start), rounded(at.middle), rounded(at.end)],
            "processes": {name: self._process_json(name) for name in self.processes()},
            "pg_connections": pg.as_list(0) if self.database == "postgresql" else None,
            "rss_flat": self.flat(),
            "surveys_created": self.created,
            "deliveries_expected": self.expected,
            "deliveries_received": self.received,
            "lost": self.lost,
            "repeated": self.repeated,
            "api_errors": sum(self.api_errors.values()),
            "api_errors_by_kind": dict(self.api_errors),
            "drain_s": rounded(self.drain_s),
            "elapsed_s": rounded(self.elapsed_s),
        }

    def table(self) -> str:
        data = self.as_json()
        title = (
            f"soak: {data['topology']} on {data['database']}, {data['duration_s']} s at "
            f"{data['rate_per_s']:g} surveys/s (achieved {data['created_per_s']}), "
            f"fan-out {data['fanout']}; marks at {_series(data['marks_s'], ' s', digits=1)}"
        )
        return "\n".join([title, "", _processes_table(data), "", _totals_table(data)])


def _series(values: list[float | None], unit: str = "", *, digits: int = 0) -> str:
    return " / ".join("-" if v is None else f"{v:.{digits}f}" for v in values) + unit


def _change(percent: float | None, flat: bool | None, *, judged: bool) -> str:
    if percent is None:
        return "-"
    verdict = ("flat" if flat else "NOT FLAT") if judged else "(bench)"
    return f"{percent:+.1f} % {verdict}"


def _processes_table(data: dict[str, Any]) -> str:
    rows = [["process", "RSS MB start / mid / end", "change", "fds start / mid / end", "CPU"]]
    for name, figures in data["processes"].items():
        cpu = figures["cpu_percent"]
        rows.append(
            [
                name,
                _series(figures["rss_mb"], digits=1),
                _change(
                    figures["rss_change_percent"],
                    figures["rss_flat"],
                    judged=not figures["bench_side"],
                ),
                _series(figures["fds"]),
                "-" if cpu is None else f"{cpu:.0f} %",
            ]
        )
    return columns(rows)


def _totals_table(data: dict[str, Any]) -> str:
    flat = "-" if data["rss_flat"] is None else ("yes" if data["rss_flat"] else "NO")
    errors = data["api_errors"]
    by_kind = ", ".join(f"{k}: {v}" for k, v in data["api_errors_by_kind"].items())
    rows = [
        ("surveys created (201)", str(data["surveys_created"])),
        (f"deliveries expected (x {data['fanout']})", str(data["deliveries_expected"])),
        (
            "deliveries received",
            f"{data['deliveries_received']} distinct webhook-ids "
            f"(drain {data['drain_s']} s after the load)",
        ),
        ("lost", str(data["lost"]) + ("  LOST" if data["lost"] else "")),
        ("repeated", str(data["repeated"])),
        ("API errors", f"{errors} ({by_kind})" if errors else "0"),
        (f"memory flat (within {FLAT_PERCENT:g} %)", flat),
        ("elapsed", f"{data['elapsed_s']} s"),
    ]
    if data["pg_connections"] is not None:
        rows.insert(-2, ("PostgreSQL connections", _series(data["pg_connections"])))
    return columns(rows)


def soak_json(minutes: float, reports: Sequence[SoakReport]) -> dict[str, Any]:
    """One object for the whole invocation: every topology's run and the verdicts."""
    flat = [report.flat() for report in reports]
    return {
        "soak_minutes": minutes,
        "runs": [report.as_json() for report in reports],
        "lost": sum(report.lost for report in reports),
        "rss_flat": None if None in flat else all(flat),
    }
