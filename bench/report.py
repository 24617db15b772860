"""The figures of one run: a table for people, one JSON object for machines."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.baseline import Driven
from bench.pipeline import EndpointRates, Run
from bench.stats import Percentiles

if TYPE_CHECKING:
    from bench.run import Options

LATENCY_BASIS = (
    "from the API's created_at (taken just before the commit) to the receiver's receipt, "
    "creating surveys at half the saturated rate"
)

# The targets of issue 5: (name, JSON key, threshold, higher is better).
TARGETS = [
    ("deliveries >= 50% of baseline", "ratio", 0.5, True),
    ("p99 < 250 ms at half rate", "latency_p99", 250.0, False),
    ("idle p50 < 50 ms", "idle_p50", 50.0, False),
    ("completion >= 70% of GET config", "completion_ratio", 0.7, True),
]


# Servers the bench did not start: their CPU is shown beside the pipeline's, not in it.
SERVERS = ("postgres",)


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class Report:
    options: Options
    database: str = "sqlite"
    elapsed_s: float = 0.0
    baseline_concurrency: int = 0
    baseline: Driven | None = None
    baseline_httpx: Driven | None = None
    saturated: Run | None = None
    paced: Run | None = None
    idle: Run | None = None
    endpoints: EndpointRates | None = None
    saturated_cpu_s: dict[str, float | None] = field(default_factory=dict)
    baseline_cpu_s: dict[str, float | None] = field(default_factory=dict)
    load_average: tuple[float, float] = (0.0, 0.0)
    worker_rss_before_mb: list[float | None] = field(default_factory=list)
    worker_rss_after_mb: list[float | None] = field(default_factory=list)

    @classmethod
    def start(cls, options: Options) -> Report:
        return cls(options=options)

    @property
    def baseline_posts_per_s(self) -> float:
        return self.baseline.per_s if self.baseline else 0.0

    @property
    def deliveries_per_s(self) -> float:
        return self.saturated.deliveries_per_s if self.saturated else 0.0

    @property
    def ratio(self) -> float:
        base = self.baseline_posts_per_s
        return self.deliveries_per_s / base if base else 0.0

    def cpu_ms_per_post(self) -> float | None:
        """CPU of the plain client and the receiver per baseline POST."""
        parts = [self.baseline_cpu_s.get("bench"), self.baseline_cpu_s.get("receiver")]
        if self.baseline is None or not self.baseline.posts or None in parts:
            return None
        return sum(p for p in parts if p is not None) / self.baseline.posts * 1000

    def cpu_ms_per_delivery(self) -> dict[str, float]:
        """CPU per delivery of each process of the pipeline (the load generator, `bench`,
        left out) and their `total`, in the saturated phase; the PostgreSQL server's,
        when it was measured, after the total and not in it."""
        received = self.saturated.received if self.saturated else 0
        if not received:
            return {}
        per = {
            name: value / received * 1000
            for name, value in self.saturated_cpu_s.items()
            if value is not None and name != "bench"
        }
        ours = {name: ms for name, ms in per.items() if name not in SERVERS}
        servers = {name: ms for name, ms in per.items() if name in SERVERS}
        return {**ours, "total": sum(ours.values()), **servers}

    def cpu_bound_ratio(self) -> float | None:
        """Baseline CPU per POST over pipeline CPU per delivery: the ratio this machine
        would show if nothing else ran on it, as both sides were CPU-bound."""
        post, delivery = self.cpu_ms_per_post(), self.cpu_ms_per_delivery().get("total")
        return post / delivery if post and delivery else None

    def _latency(self, run: Run | None, *, since_ack: bool = False) -> Percentiles:
        empty = Percentiles(None, None, None, None, 0)
        return run.latency_ms(since_ack=since_ack) if run else empty

    def targets(self) -> dict[str, bool | None]:
        values: dict[str, float | None] = {
            "ratio": self.ratio,
            "latency_p99": self._latency(self.paced).p99,
            "idle_p50": self._latency(self.idle).p50,
            "completion_ratio": self.endpoints.ratio if self.endpoints else None,
        }
        met: dict[str, bool | None] = {}
        for name, key, threshold, higher in TARGETS:
            value = values[key]
            met[name] = None if value is None else (value >= threshold) == higher
        return met

    def as_json(self) -> dict[str, Any]:
        saturated, paced, endpoints = self.saturated, self.paced, self.endpoints
        options = self.options
        return {
            "database": self.database,
            "fanout": options.fanout,
            "workers": options.workers,
            "worker_concurrency": options.worker_concurrency,
            "api_concurrency": options.api_concurrency,
            "quick": options.quick,
            "cpus": os.cpu_count(),
            "baseline_posts_per_s": rounded(self.baseline_posts_per_s),
            "baseline_concurrency": self.baseline_concurrency,
            "baseline_httpx_posts_per_s": rounded(
                self.baseline_httpx.per_s if self.baseline_httpx else None
            ),
            "deliveries_per_s": rounded(self.deliveries_per_s),
            "ratio": rounded(self.ratio, 3),
            "creations_per_s": rounded(saturated.creations_per_s if saturated else None),
            "drain_per_s": rounded(saturated.drain_per_s if saturated else None),
            "saturated_window_s": rounded(saturated.window_s if saturated else None, 2),
            "saturated_cpu_s": {k: rounded(v, 2) for k, v in self.saturated_cpu_s.items()},
            "cpu_ms_per_delivery": {
                k: rounded(v, 2) for k, v in self.cpu_ms_per_delivery().items()
            },
            "baseline_cpu_ms_per_post": rounded(self.cpu_ms_per_post(), 3),
            "cpu_bound_ratio": rounded(self.cpu_bound_ratio(), 3),
            "surveys": len(saturated.created) if saturated else 0,
            "deliveries_expected": saturated.expected if saturated else 0,
            "deliveries_received": saturated.received if saturated else 0,
            "duplicates": saturated.duplicates if saturated else 0,
            "complete": saturated.complete if saturated else False,
            "latency_ms": self._latency(paced).as_dict(),
            "latency_basis": LATENCY_BASIS,
            "latency_rate_per_s": rounded(paced.deliveries_per_s if paced else None),
            "latency_from_201_ms": self._latency(paced, since_ack=True).as_dict(),
            "saturated_latency_ms": self._latency(saturated).as_dict(),
            "idle_latency_ms": self._latency(self.idle).as_dict(),
            "completions_per_s": rounded(endpoints.completions_per_s if endpoints else None),
            "get_config_per_s": rounded(endpoints.get_config_per_s if endpoints else None),
            "completion_ratio": rounded(endpoints.ratio if endpoints else None, 3),
            "cpu_ms_per_get": _per_request(endpoints.cpu_ms_per_get if endpoints else {}),
            "cpu_ms_per_patch": _per_request(endpoints.cpu_ms_per_patch if endpoints else {}),
            "worker_rss_mb": {
                "before": [rounded(v) for v in self.worker_rss_before_mb],
                "after": [rounded(v) for v in self.worker_rss_after_mb],
            },
            "targets": self.targets(),
            "load_average_1m": [round(v, 2) for v in self.load_average],
            "elapsed_s": rounded(self.elapsed_s),
        }

    def table(self) -> str:
        data = self.as_json()
        latency, saturated_latency = data["latency_ms"], data["saturated_latency_ms"]
        idle_latency = data["idle_latency_ms"]
        rows = [
            ("database", data["database"]),
            ("fan-out / workers x concurrency", _setup(data)),
            ("baseline: aiohttp -> receiver", f"{_num(data['baseline_posts_per_s'])} POSTs/s"),
            (
                "  the same via httpx over aiohttp",
                f"{_num(data['baseline_httpx_posts_per_s'])} POSTs/s",
            ),
            ("survey creations (API)", f"{_num(data['creations_per_s'])} /s"),
            (
                "deliveries end to end",
                f"{_num(data['deliveries_per_s'])} /s "
                f"({data['deliveries_received']}/{data['deliveries_expected']}"
                f"{'' if data['complete'] else ', INCOMPLETE'}, {data['duplicates']} repeated)",
            ),
            ("  after the last creation (drain)", f"{_num(data['drain_per_s'])} /s"),
            ("ratio deliveries / baseline", f"{data['ratio'] * 100:.1f} %"),
            (
                f"CPU s while saturated ({data['saturated_window_s']} s)",
                _cpu(data["saturated_cpu_s"]),
            ),
            (
                "CPU ms per delivery"
                + (
                    " (postgres: the server, not in the total)"
                    if data["database"] == "postgresql"
                    else ""
                ),
                _cpu(data["cpu_ms_per_delivery"], digits=2),
            ),
            (
                "CPU ms per baseline POST",
                f"{data['baseline_cpu_ms_per_post']} (client + receiver)",
            ),
            ("ratio of CPU costs (POST / delivery)", _percent(data["cpu_bound_ratio"])),
            (
                f"latency at half rate ({_num(data['latency_rate_per_s'])}/s)",
                _pcts(latency),
            ),
            ("  same, from the client's 201", _pcts(data["latency_from_201_ms"])),
            ("latency saturated", _pcts(saturated_latency)),
            ("latency idle", _pcts(idle_latency)),
            ("GET /config/webhook/{id}", f"{_num(data['get_config_per_s'])} /s"),
            ("PATCH /surveys/{id} (complete)", f"{_num(data['completions_per_s'])} /s"),
            ("ratio PATCH / GET", _percent(data["completion_ratio"])),
            ("  CPU ms per GET", _cpu(data["cpu_ms_per_get"], digits=2)),
            ("  CPU ms per PATCH", _cpu(data["cpu_ms_per_patch"], digits=2)),
            ("worker RSS before -> after", _rss(data["worker_rss_mb"])),
            ("load average (1 min) start, end", _loads(data["load_average_1m"])),
            ("elapsed", f"{data['elapsed_s']} s"),
        ]
        lines = [columns(rows), ""]
        lines.append("latency: " + LATENCY_BASIS)
        for name, met in data["targets"].items():
            mark = "n/a" if met is None else ("met" if met else "MISSED")
            lines.append(f"target {name}: {mark}")
        return "\n".join(lines)


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells, each column but the last padded to its widest cell, two spaces apart."""
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(map(len, rows)))]
    return "\n".join(
        "  ".join(
            cell if i == len(row) - 1 else cell.ljust(widths[i]) for i, cell in enumerate(row)
        )
        for row in rows
    )


def _setup(data: dict[str, Any]) -> str:
    return f"{data['fanout']} / {data['workers']} x {data['worker_concurrency']}"


def _per_request(values: dict[str, float]) -> dict[str, float | None]:
    return {name: rounded(value, 3) for name, value in values.items()}


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _pcts(values: dict[str, Any]) -> str:
    if not values["samples"]:
        return "-"
    return (
        f"p50 {values['p50']:.0f} ms  p95 {values['p95']:.0f} ms  "
        f"p99 {values['p99']:.0f} ms  (n={values['samples']})"
    )


def _cpu(values: dict[str, float | None], *, digits: int = 1) -> str:
    return "  ".join(
        f"{name} {'-' if v is None else f'{v:.{digits}f}'}" for name, v in values.items()
    )


def _loads(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def _rss(values: dict[str, list[float | None]]) -> str:
    def mb(items: list[float | None]) -> str:
        return ", ".join("-" if v is None else f"{v:.0f}" for v in items) or "-"

    return f"{mb(values['before'])} -> {mb(values['after'])} MB"
