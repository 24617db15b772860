"""The soak: `python -m bench --soak MINUTES`. Steady load for MINUTES on each topology,
one after the other, then whether the processes' memory stayed flat and whether every
delivery arrived (`bench.soak_report`).

- `serve`: `webhooks serve` alone on SQLite, without Redis: one process.
- `procfile`: the Procfile's `web`, `poller` and `worker` processes; SQLite, or
  PostgreSQL with `--database-url`; a private `redis-server`, or `--redis-url`.

The load is cheap and bounded: surveys created through the API at a fixed rate for the
duration, never more than `--api-concurrency` requests pending (if the API falls behind,
so does the schedule, and it stops at the deadline all the same). `bench.sampling` reads
`/proc` every few seconds. After the load, the deliveries get a minute or more to arrive.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench import pipeline
from bench.api import Api, ApiError, ReceiverClient
from bench.progress import Progress
from bench.run import sigterm_interrupts, warm_up
from bench.sampling import PgConnections, sample_on_schedule, schedule
from bench.soak_report import SoakReport
from bench.stack import (
    BenchError,
    Service,
    create_api_key,
    free_port,
    fresh_postgres,
    private_redis,
    procfile_service,
    receiver_process,
    serve_service,
    service_env,
    temp_dir,
    webhooks_cli,
)

TOPOLOGIES = ("serve", "procfile")
DEFAULT_RATE_PER_S = 50.0
DRAIN_MIN_S = 60.0
DRAIN_ASSUMED_PER_S = 50.0
"""A backlog left at the end of the load gets a second of drain per this many deliveries."""
DRAIN_POLL_S = 0.5
RECOUNT_PAUSE_S = 5.0


@dataclass(frozen=True)
class SoakOptions:
    minutes: float
    topologies: tuple[str, ...]
    rate_per_s: float
    fanout: int
    workers: int
    worker_concurrency: int
    api_concurrency: int
    database_url: str | None
    redis_url: str | None
    log_dir: Path | None
    show_progress: bool

    @property
    def duration_s(self) -> float:
        return self.minutes * 60


@dataclass(frozen=True)
class _Stage:
    """One topology, started: what the measurement needs of it."""

    topology: str
    service: Service
    receiver_url: str
    api_key: str
    database_url: str
    pids: dict[str, int]
    log_dir: Path

    @property
    def database(self) -> str:
        return "postgresql" if self.database_url.startswith("postgresql") else "sqlite"


@dataclass
class Load:
    """The surveys one soak created (their ids) and the API errors it met, by status or
    exception."""

    survey_ids: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    async def run(
        self, api: Api, *, rate_per_s: float, duration_s: float, in_flight: int, started: float
    ) -> None:
        """Create surveys at `rate_per_s` from `started` (monotonic) for `duration_s`."""
        slots = asyncio.Semaphore(in_flight)
        deadline = started + duration_s
        pending: set[asyncio.Task[None]] = set()
        for number in range(int(rate_per_s * duration_s)):
            await asyncio.sleep(max(0.0, started + number / rate_per_s - time.monotonic()))
            await slots.acquire()
            if time.monotonic() >= deadline:
                slots.release()
                break
            task = asyncio.create_task(self._create(api, number, slots))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)

    async def _create(self, api: Api, number: int, slots: asyncio.Semaphore) -> None:
        try:
            self.survey_ids.append((await api.create_survey(f"soak-{number:07d}")).survey_id)
        except ApiError as exc:
            self.errors[str(exc.status)] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors[type(exc).__name__] += 1
        finally:
            slots.release()


def soak(options: SoakOptions) -> list[SoakReport]:
    """Each topology in turn: start, load and sample, drain, stop; their reports."""
    progress = Progress(enabled=options.show_progress)
    try:
        with sigterm_interrupts():
            return [_soak_one(options, topology, progress) for topology in options.topologies]
    finally:
        progress.finish()


def _soak_one(options: SoakOptions, topology: str, progress: Progress) -> SoakReport:
    started = time.monotonic()
    with ExitStack() as stack:
        stage = _start(options, topology, stack, progress)
        try:
            report = asyncio.run(_measure(options, stage, progress))
        except BenchError as exc:
            where = f"logs in {stage.log_dir}" if options.log_dir else "--log-dir keeps the logs"
            tails = stage.service.log_tails()
            raise BenchError(f"{topology}: {exc}\n{tails}\n({where})") from exc
    report.elapsed_s = time.monotonic() - started
    return report


def _start(options: SoakOptions, topology: str, stack: ExitStack, progress: Progress) -> _Stage:
    work_dir = stack.enter_context(temp_dir())
    log_dir = options.log_dir / topology if options.log_dir else work_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    progress.step(f"soak {topology}", "setup")
    redis_url, database_url, infrastructure = _infrastructure(options, topology, stack, work_dir)
    receiver = stack.enter_context(receiver_process(log_dir))
    env = service_env(
        database_url=database_url,
        redis_url=redis_url,
        port=free_port(),
        worker_concurrency=options.worker_concurrency,
    )
    webhooks_cli(env, "migrate")
    api_key = create_api_key(env, "bench-soak")
    starting: AbstractContextManager[Service] = (
        procfile_service(env, log_dir, workers=options.workers)
        if topology == "procfile"
        else serve_service(env, log_dir)
    )
    service = stack.enter_context(starting)
    pids = {child.name: child.pid for child in service.processes}
    pids.update(infrastructure, receiver=receiver.child.pid, bench=os.getpid())
    return _Stage(topology, service, receiver.base_url, api_key, database_url, pids, log_dir)


def _infrastructure(
    options: SoakOptions, topology: str, stack: ExitStack, work_dir: Path
) -> tuple[str | None, str, dict[str, int]]:
    """Redis URL (none for `serve`), database URL, and the pid of a private Redis."""
    if topology == "serve":
        return None, f"sqlite:///{work_dir / 'webhooks.db'}", {}
    pids: dict[str, int] = {}
    redis_url = options.redis_url
    if not redis_url:
        redis = stack.enter_context(private_redis(work_dir))
        redis_url, pids["redis"] = redis.url, redis.child.pid
    if options.database_url:
        database_url = stack.enter_context(fresh_postgres(options.database_url))
    else:
        database_url = f"sqlite:///{work_dir / 'webhooks.db'}"
    return redis_url, database_url, pids


async def _measure(options: SoakOptions, stage: _Stage, progress: Progress) -> SoakReport:
    report = SoakReport(
        stage.topology, stage.database, options.fanout, options.rate_per_s, options.duration_s
    )
    receiver = ReceiverClient(stage.receiver_url)
    pg = None
    try:
        if options.database_url and stage.database == "postgresql":
            pg = await PgConnections.open(options.database_url, stage.database_url)
        base_url, concurrency = stage.service.base_url, options.api_concurrency
        async with Api(base_url, stage.api_key, concurrency=concurrency) as api:
            await pipeline.create_configs(api, stage.receiver_url, fanout=options.fanout)
            check = stage.service.check_alive
            await warm_up(
                api,
                receiver,
                fanout=options.fanout,
                api_concurrency=concurrency,
                check=check,
                progress=progress,
            )
            await receiver.reset()
            load = await _load_and_sample(report, api, receiver, stage, pg, options, progress)
            await _drain(report, set(load.survey_ids), receiver, check, progress)
    finally:
        await receiver.close()
        if pg is not None:
            await pg.close()
    return report


async def _load_and_sample(
    report: SoakReport,
    api: Api,
    receiver: ReceiverClient,
    stage: _Stage,
    pg: PgConnections | None,
    options: SoakOptions,
    progress: Progress,
) -> Load:
    load, duration_s = Load(), options.duration_s
    started = time.monotonic()
    creating = asyncio.create_task(
        load.run(
            api,
            rate_per_s=options.rate_per_s,
            duration_s=duration_s,
            in_flight=options.api_concurrency,
            started=started,
        )
    )

    async def tick(offset_s: float) -> None:
        stage.service.check_alive()
        if creating.done():
            creating.result()  # raises what stopped the load, if anything did
        delivered, errors = await receiver.distinct(), load.errors.total()
        detail = f"{offset_s:.0f}/{duration_s:.0f} s, created {len(load.survey_ids)}, "
        progress.show(f"soak {stage.topology}", detail + f"delivered {delivered}, errors {errors}")

    try:
        report.samples = await sample_on_schedule(
            schedule(duration_s),
            started=started,
            pids=stage.pids,
            pg_connections=pg.count if pg else _no_count,
            every_tick=tick,
        )
        await creating
    finally:
        creating.cancel()
    report.created, report.api_errors = len(load.survey_ids), dict(load.errors)
    return load


async def _no_count() -> None:
    return None


async def _drain(
    report: SoakReport,
    ours: set[str],
    receiver: ReceiverClient,
    check: pipeline.Check,
    progress: Progress,
) -> None:
    """Wait until every expected delivery arrived, or the deadline (a minute at least);
    then count the deliveries of our surveys and the repeats."""
    started, expected = time.monotonic(), report.expected
    backlog = max(0, expected - await receiver.distinct())
    deadline = started + DRAIN_MIN_S + backlog / DRAIN_ASSUMED_PER_S
    while True:
        distinct = await receiver.distinct()
        progress.show(f"soak {report.topology}", f"drain: delivered {distinct}/{expected}")
        timed_out = time.monotonic() > deadline
        if distinct >= expected or timed_out:
            report.received = await _received(receiver, ours)
            if report.received >= expected or timed_out:
                break
            # More distinct ids than ours: surveys created by requests that failed.
            await asyncio.sleep(RECOUNT_PAUSE_S)
        check()
        await asyncio.sleep(DRAIN_POLL_S)
    report.drain_s = time.monotonic() - started
    report.repeated = await receiver.repeated()


async def _received(receiver: ReceiverClient, ours: set[str]) -> int:
    return sum(1 for receipt in await receiver.dump() if receipt.survey_id in ours)
