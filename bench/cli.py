"""`python -m bench`: the options, and what is printed where (the table on stdout, or
one JSON object on stdout with `--json`; progress and the table then on stderr)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.run import FULL, QUICK, Options, run, worker_concurrency_default
from bench.stack import BenchError


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _postgres_url(value: str) -> str:
    if not value.startswith(("postgresql://", "postgres://")):
        raise argparse.ArgumentTypeError(
            "a postgresql:// URL (SQLite is the default, in a temporary directory)"
        )
    return value


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
    parser.add_argument("--no-progress", action="store_true", help="no progress line")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
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
    )
    try:
        report = run(options)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        sys.exit(130)
    if args.json:
        print(report.table(), file=sys.stderr)
        print(json.dumps(report.as_json()))
    else:
        print(report.table())
