"""`python -m bench`: the options, and what is printed where (the table on stdout, or
one JSON object on stdout with `--json`; progress and the table then on stderr).

`--soak MINUTES` runs the soak (`bench.soak`) instead of the benchmark; it exits with
`LOST_EXIT` if a delivery was lost, 1 if it could not run."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bench.run import FULL, QUICK, Options, run, worker_concurrency_default
from bench.soak import DEFAULT_RATE_PER_S, TOPOLOGIES, SoakOptions, soak
from bench.soak_report import soak_json
from bench.stack import BenchError

LOST_EXIT = 3
T = TypeVar("T")
SOAK_ONLY = ("soak_topology", "rate")
NOT_WITH_SOAK = ("quick", "deliveries", "profile", "endpoints_only", "completions")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not (number > 0 and math.isfinite(number)):
        raise argparse.ArgumentTypeError("must be a number more than 0")
    return number


def _postgres_url(value: str) -> str:
    if not value.startswith(("postgresql://", "postgres://")):
        raise argparse.ArgumentTypeError(
            "a postgresql:// URL (SQLite is the default, in a temporary directory)"
        )
    return value


def _controls(value: str) -> dict[str, Any]:
    try:
        controls = json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(controls, dict):
        raise argparse.ArgumentTypeError("a JSON object of SPEC 13's fields")
    return controls


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the webhook pipeline (web, poller, worker processes) "
        "against the raw-POST baseline of this machine.",
    )
    parser.add_argument("--quick", action="store_true", help="small counts: under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--fanout", type=_positive, default=1, help="configurations per event (1, 10)"
    )
    parser.add_argument("--workers", type=_positive, default=1, help="worker processes")
    parser.add_argument(
        "--concurrency",
        type=_positive,
        default=worker_concurrency_default(),
        help="WEBHOOKS_WORKER_CONCURRENCY of each worker, and the baseline's per worker "
        "(default: the environment's, else 32)",
    )
    parser.add_argument(
        "--api-concurrency", type=_positive, default=8, help="client tasks calling the API"
    )
    parser.add_argument(
        "--deliveries", type=_positive, help="deliveries in the saturated phase (overrides)"
    )
    parser.add_argument(
        "--database-url",
        type=_postgres_url,
        help="PostgreSQL server: a fresh database bench_<random> is created and dropped "
        "on it; the database the URL names is not touched",
    )
    parser.add_argument("--redis-url", help="an existing Redis (default: a private redis-server)")
    parser.add_argument("--log-dir", type=Path, help="keep the processes' logs here")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy record web, poller and worker1 during the saturated phase, "
        "collapsed stacks into DIR",
    )
    parser.add_argument(
        "--endpoints-only",
        action="store_true",
        help="after the warm-up, only GET config vs PATCH survey (with --profile, "
        "recorded during those requests)",
    )
    parser.add_argument(
        "--completions", type=_positive, help="surveys completed in GET vs PATCH (overrides)"
    )
    parser.add_argument(
        "--controls",
        type=_controls,
        help="delivery controls (SPEC 13) of every configuration, as JSON, e.g. "
        '\'{"filter": "content.id != null", "headers": {"X-Tenant": "a"}, "payload": "thin"}\'',
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress line")
    soak = parser.add_argument_group("soak", "steady load, then memory, descriptors, losses")
    soak.add_argument(
        "--soak",
        type=_positive_float,
        metavar="MINUTES",
        help="instead of the benchmark: surveys at --rate for MINUTES on each topology; "
        f"exits {LOST_EXIT} if a delivery was lost",
    )
    soak.add_argument(
        "--soak-topology",
        choices=TOPOLOGIES,
        help="serve (one process, SQLite, no Redis) or procfile (web, poller, workers; "
        "--database-url, --redis-url); default: serve, then procfile",
    )
    soak.add_argument(
        "--rate",
        type=_positive_float,
        help=f"surveys created per second under --soak (default {DEFAULT_RATE_PER_S:g})",
    )
    return parser


def _check_soak(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.soak is None:
        given = [name for name in SOAK_ONLY if getattr(args, name) is not None]
        if given:
            parser.error(f"--{given[0].replace('_', '-')} needs --soak")
        return
    given = [name for name in NOT_WITH_SOAK if getattr(args, name)]
    if given:
        parser.error(f"--{given[0].replace('_', '-')} does not apply to --soak")
    procfile_only = args.database_url or args.redis_url or args.workers != 1
    if args.soak_topology == "serve" and procfile_only:
        parser.error("--database-url, --redis-url and --workers apply to the procfile topology")


def main(argv: list[str] | None = None) -> None:
    command = parser()
    args = command.parse_args(argv)
    _check_soak(command, args)
    if args.soak is None:
        _benchmark(args)
    else:
        _soak(args)


def _benchmark(args: argparse.Namespace) -> None:
    sizes = QUICK if args.quick else FULL
    if args.deliveries:
        sizes = type(sizes)(**{**vars(sizes), "deliveries": args.deliveries})
    if args.completions:
        sizes = type(sizes)(**{**vars(sizes), "completions": args.completions})
    options = Options(
        sizes=sizes,
        quick=args.quick,
        fanout=args.fanout,
        workers=args.workers,
        worker_concurrency=args.concurrency,
        api_concurrency=args.api_concurrency,
        database_url=args.database_url,
        redis_url=args.redis_url,
        log_dir=args.log_dir,
        profile_dir=args.profile,
        show_progress=not args.no_progress,
        endpoints_only=args.endpoints_only,
        controls=args.controls,
    )
    report = _guarded(lambda: run(options))
    _print(report.table(), report.as_json(), as_json=args.json)


def _soak(args: argparse.Namespace) -> None:
    options = SoakOptions(
        minutes=args.soak,
        topologies=(args.soak_topology,) if args.soak_topology else TOPOLOGIES,
        rate_per_s=args.rate or DEFAULT_RATE_PER_S,
        fanout=args.fanout,
        workers=args.workers,
        worker_concurrency=args.concurrency,
        api_concurrency=args.api_concurrency,
        database_url=args.database_url,
        redis_url=args.redis_url,
        log_dir=args.log_dir,
        show_progress=not args.no_progress,
    )
    reports = _guarded(lambda: soak(options))
    summary = soak_json(args.soak, reports)
    _print("\n\n".join(report.table() for report in reports), summary, as_json=args.json)
    if summary["lost"]:
        print(f"bench: {summary['lost']} deliveries lost", file=sys.stderr)
        sys.exit(LOST_EXIT)


def _guarded(work: Callable[[], T]) -> T:
    """`work()`, its failures as a message on stderr and an exit status."""
    try:
        return work()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        sys.exit(130)


def _print(table: str, data: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(table, file=sys.stderr)
        print(json.dumps(data))
    else:
        print(table)
