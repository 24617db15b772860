"""One benchmark run, start to finish: set up the stack, measure every phase, tear down.

Setup and teardown are synchronous and live in one `ExitStack`, outside the event loop,
so that they unwind on success, on an error, on Ctrl-C and on SIGTERM alike.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench import baseline, pipeline
from bench.api import Api, ReceiverClient
from bench.progress import Progress
from bench.report import Report
from bench.stack import (
    VENV_BIN,
    BenchError,
    Child,
    Server,
    Service,
    create_api_key,
    free_port,
    fresh_postgres,
    private_redis,
    procfile_service,
    receiver_process,
    running,
    service_env,
    temp_dir,
    webhooks_cli,
)

DEFAULT_WORKER_CONCURRENCY = 32
WARMUP_SURVEYS = 10
WARMUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Sizes:
    """How much each phase does; `--quick` and the default run differ only here."""

    deliveries: int
    baseline_s: float
    baseline_httpx_s: float
    paced_s: float
    idle_surveys: int
    idle_pause_s: float
    completions: int
    drain_timeout_s: float


QUICK = Sizes(
    deliveries=600,
    baseline_s=2.0,
    baseline_httpx_s=1.0,
    paced_s=3.0,
    idle_surveys=6,
    idle_pause_s=0.2,
    completions=300,
    drain_timeout_s=12.0,
)
FULL = Sizes(
    deliveries=3000,
    baseline_s=5.0,
    baseline_httpx_s=3.0,
    paced_s=10.0,
    idle_surveys=15,
    idle_pause_s=0.5,
    completions=1000,
    drain_timeout_s=120.0,
)


@dataclass(frozen=True)
class Options:
    sizes: Sizes
    quick: bool
    fanout: int
    workers: int
    worker_concurrency: int
    api_concurrency: int
    database_url: str | None
    redis_url: str | None
    log_dir: Path | None
    profile_dir: Path | None
    show_progress: bool
    endpoints_only: bool = False
    controls: dict[str, Any] | None = None


def worker_concurrency_default() -> int:
    value = os.environ.get("WEBHOOKS_WORKER_CONCURRENCY")
    return int(value) if value and value.isdigit() else DEFAULT_WORKER_CONCURRENCY


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as if Ctrl-C: `asyncio.run` then cancels the measurement cleanly. Where
    SIGINT is ignored (a background job of a script), the interrupt is raised here."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops the run as Ctrl-C does, for the duration."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(options: Options) -> Report:
    """Start everything, measure, stop everything; the report."""
    progress = Progress(enabled=options.show_progress)
    try:
        with sigterm_interrupts(), ExitStack() as stack:
            return _run(options, stack, progress)
    finally:
        progress.finish()


def _run(options: Options, stack: ExitStack, progress: Progress) -> Report:
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    work_dir = stack.enter_context(temp_dir())
    log_dir = options.log_dir or work_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    progress.step("setup", "redis, database, receiver")
    observed: list[Child | Server] = []
    if options.redis_url:
        redis_url = options.redis_url
    else:
        redis = stack.enter_context(private_redis(work_dir))
        redis_url, observed = redis.url, [redis.child]
    if options.database_url:
        database_url = stack.enter_context(fresh_postgres(options.database_url))
        observed.append(Server("postgres", "postgres"))
    else:
        database_url = f"sqlite:///{work_dir / 'webhooks.db'}"
    receiver = stack.enter_context(receiver_process(log_dir))
    env = service_env(
        database_url=database_url,
        redis_url=redis_url,
        port=free_port(),
        worker_concurrency=options.worker_concurrency,
    )
    progress.step("setup", "migrate, API clients")
    webhooks_cli(env, "migrate")
    keys = (create_api_key(env, "bench"), create_api_key(env, "bench-completions"))
    progress.step("setup", f"web, poller, {options.workers} worker(s)")
    service = stack.enter_context(procfile_service(env, log_dir, workers=options.workers))
    observed = [*service.processes, receiver.child, *observed]
    try:
        report = asyncio.run(
            _measure(options, service, observed, receiver.base_url, keys, progress)
        )
    except BenchError as exc:
        where = f"logs in {log_dir}" if options.log_dir else "use --log-dir to keep the logs"
        raise BenchError(f"{exc}\n{service.log_tails()}\n({where})") from exc
    report.database = "postgresql" if options.database_url else "sqlite"
    report.load_average = (load_before, os.getloadavg()[0])
    report.elapsed_s = time.monotonic() - started
    return report


async def _measure(
    options: Options,
    service: Service,
    observed: list[Child | Server],
    receiver_url: str,
    keys: tuple[str, str],
    progress: Progress,
) -> Report:
    sizes = options.sizes
    check = service.check_alive
    concurrency = options.api_concurrency
    receiver = ReceiverClient(receiver_url)
    try:
        async with (
            Api(service.base_url, keys[0], concurrency=concurrency) as api,
            Api(service.base_url, keys[1], concurrency=concurrency) as completer,
        ):
            report = Report.start(options)
            configs = await pipeline.create_configs(
                api, receiver_url, fanout=options.fanout, controls=options.controls
            )
            await warm_up(
                api,
                receiver,
                fanout=options.fanout,
                api_concurrency=options.api_concurrency,
                check=check,
                progress=progress,
            )
            if options.endpoints_only:
                report.endpoints = await _endpoints(
                    api, completer, configs[0], options, progress, observed, profile=service
                )
                check()
                return report
            await _baselines(report, receiver, observed, options, progress)
            report.worker_rss_before_mb = _rss(service)

            surveys = max(1, -(-sizes.deliveries // options.fanout))
            cpu_before = _cpu_s(observed)
            with _profiling(service, options.profile_dir):
                saturated = await pipeline.saturate(
                    api,
                    receiver,
                    surveys=surveys,
                    fanout=options.fanout,
                    concurrency=concurrency,
                    # A backlog of many deliveries takes its time to drain.
                    drain_timeout_s=max(sizes.drain_timeout_s, sizes.deliveries / 100),
                    check=check,
                    progress=progress,
                )
            report.saturated = saturated
            report.saturated_cpu_s = _minus(_cpu_s(observed), cpu_before)

            half_rate = max(1.0, saturated.deliveries_per_s / 2 / options.fanout)
            report.paced = await pipeline.paced(
                api,
                receiver,
                surveys_per_s=half_rate,
                duration_s=sizes.paced_s,
                fanout=options.fanout,
                drain_timeout_s=sizes.drain_timeout_s,
                check=check,
                progress=progress,
            )
            report.idle = await pipeline.idle(
                api,
                receiver,
                surveys=sizes.idle_surveys,
                fanout=options.fanout,
                pause_s=sizes.idle_pause_s,
                timeout_s=5.0,
                check=check,
                progress=progress,
            )

            report.endpoints = await _endpoints(
                api, completer, configs[0], options, progress, observed
            )
            report.worker_rss_after_mb = _rss(service)
            check()
            return report
    finally:
        await receiver.close()


async def _endpoints(
    api: Api,
    completer: Api,
    config_id: str,
    options: Options,
    progress: Progress,
    observed: list[Child | Server],
    *,
    profile: Service | None = None,
) -> pipeline.EndpointRates:
    """GET of a configuration against completion of fresh surveys (`endpoint_rates`);
    with `profile`, its processes are recorded during the GETs and PATCHes."""
    count, concurrency = options.sizes.completions, options.api_concurrency
    progress.step("GET vs PATCH", f"creating {count} surveys")
    to_complete = await pipeline.create_surveys(
        completer, count=count, concurrency=concurrency, prefix="complete"
    )
    with _profiling(profile, options.profile_dir) if profile else nullcontext():
        return await pipeline.endpoint_rates(
            api,
            config_id,
            completer,
            to_complete,
            concurrency=concurrency,
            rounds=3,
            progress=progress,
            cpu=lambda: _cpu_s(observed),
        )


async def warm_up(
    api: Api,
    receiver: ReceiverClient,
    *,
    fanout: int,
    api_concurrency: int,
    check: pipeline.Check,
    progress: Progress,
) -> None:
    """A few surveys end to end: proves the pipeline works and opens every pool."""
    progress.step("warm-up", f"{WARMUP_SURVEYS} surveys end to end")
    run = await pipeline.saturate(
        api,
        receiver,
        surveys=WARMUP_SURVEYS,
        fanout=fanout,
        concurrency=min(api_concurrency, WARMUP_SURVEYS),
        drain_timeout_s=WARMUP_TIMEOUT_S,
        check=check,
        progress=progress,
        label="warm-up",
    )
    if not run.complete:
        raise BenchError(
            f"warm-up: {run.received} of {run.expected} deliveries arrived "
            f"within {WARMUP_TIMEOUT_S:.0f} s"
        )


async def _baselines(
    report: Report,
    receiver: ReceiverClient,
    observed: list[Child | Server],
    options: Options,
    progress: Progress,
) -> None:
    url = f"{receiver.base_url}/baseline"
    concurrency = options.workers * options.worker_concurrency
    report.baseline_concurrency = concurrency
    await receiver.reset()
    cpu_before = _cpu_s(observed)
    report.baseline = await baseline.drive_aiohttp(
        url, concurrency=concurrency, duration_s=options.sizes.baseline_s, progress=progress
    )
    report.baseline_cpu_s = _minus(_cpu_s(observed), cpu_before)
    received = await receiver.distinct()
    if received < report.baseline.posts:
        raise BenchError(f"baseline: {report.baseline.posts} sent, {received} received")
    await receiver.reset()
    report.baseline_httpx = await baseline.drive_httpx(
        url, concurrency=concurrency, duration_s=options.sizes.baseline_httpx_s, progress=progress
    )
    await receiver.reset()


def _cpu_s(children: list[Child | Server]) -> dict[str, float | None]:
    """CPU seconds used so far by each process, this one as `bench`."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        **{child.name: child.cpu_s() for child in children},
        "bench": usage.ru_utime + usage.ru_stime,
    }


def _minus(
    after: dict[str, float | None], before: dict[str, float | None]
) -> dict[str, float | None]:
    difference: dict[str, float | None] = {}
    for name, value in after.items():
        start = before.get(name)
        difference[name] = None if value is None or start is None else value - start
    return difference


def _rss(service: Service) -> list[float | None]:
    return [worker.rss_mb() for worker in service.workers()]


@contextmanager
def _profiling(service: Service, profile_dir: Path | None) -> Iterator[None]:
    """`py-spy record --gil` on web, the poller and the first worker for the duration."""
    if profile_dir is None:
        yield
        return
    py_spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
    if not Path(py_spy).exists():
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    profile_dir.mkdir(parents=True, exist_ok=True)
    targets = [child for child in service.processes if child.name in {"web", "poller", "worker1"}]
    with ExitStack() as stack:
        for target in targets:
            # --gil: the thread that holds the GIL, i.e. where the Python CPU goes;
            # without it py-spy counts threads waiting on locks as busy.
            argv = [py_spy, "record", "--pid", str(target.pid), "--rate", "100", "--gil"]
            argv += ["--format", "raw", "--output", str(profile_dir / f"{target.name}.txt")]
            profiler = Child(
                f"py-spy-{target.name}",
                argv,
                env=dict(os.environ),
                log_dir=profile_dir,
                stop_signal=signal.SIGINT,
            )
            stack.enter_context(running(profiler))
        time.sleep(0.5)  # py-spy attaches before the load starts
        yield
