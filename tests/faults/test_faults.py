"""Fault injection with real processes (issue 4): the production topology (PostgreSQL,
a private Redis, `web`, two `poller` and two `worker` processes from the Procfile, a
receiver on 127.0.0.1) loses no event when workers, pollers or `web` are SIGKILLed, Redis
is flushed or restarted, PostgreSQL is restarted, or the receiver answers 503 or times
out; nor does `webhooks serve` on SQLite killed and restarted, or refused every write by
its disk. Several pollers and workers never create two deliveries for one (event,
configuration) pair nor send one twice without a crash, and an endpoint that never
finishes answering does not starve the others.

Each scenario runs a few hundred events of its own tenant through the shared stack (or a
stack of its own, for faults that leave work behind or stop the database), injects its
fault while they flow, then waits until every delivery is `delivered` and every (event,
configuration) pair was accepted by the receiver. It states how many API calls it lets
fail and how (none, unless the fault takes the API down), checks every survey and
completion the API confirmed against the receiver and every survey against its events in
the database, and adds a row to the figures printed at the end (`pytest -s`) and written
to a file whose path is printed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e.harness import Process, procfile, stack_env
from tests.faults.harness import (
    Allowance,
    Audit,
    FaultReceiver,
    FaultStack,
    Figures,
    Inject,
    Mode,
    Outcome,
    Prober,
    Report,
    Tenant,
    Traffic,
    accepted,
    add_config,
    api_problems,
    attempts_since,
    converge,
    create_survey,
    create_tenant,
    error_digest,
    explain,
    figures,
    seen,
    swept_since,
    table,
    undelivered,
    wait_started,
)
from tests.processes import WEBHOOKS
from tests.servers import (
    PostgresInstance,
    RedisServer,
    free_port,
    missing,
    postgres_database,
    postgres_instance,
    redis_server,
    wait_for,
)

pytestmark = pytest.mark.e2e

SETTINGS = {
    "WEBHOOKS_DELIVERY_LEASE_S": "3",
    "WEBHOOKS_MIN_BACKOFF_MS": "100",
    "WEBHOOKS_MAX_BACKOFF_MS": "1000",
    # Nothing may end `failed` during the faults.
    "WEBHOOKS_MAX_ATTEMPTS": "50",
    "WEBHOOKS_REQUEST_TIMEOUT_S": "2",
    "WEBHOOKS_POLL_INTERVAL_S": "0.5",
}
SURVEYS = 200  # and every other one completed: 300 events, 500 deliveries a scenario
RATE_PER_S = 25.0
# Faults are injected late enough to end near the end of the traffic (so that "fault end
# to converged" measures the recovery) and early enough to leave a second or two of
# traffic after them (so that every process is seen working again).
INJECT_AFTER_SURVEYS = 100
CONVERGE_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 30.0
BACKLOG_MESSAGES = 20
# Events a stopped poller leaves (about 1.6 s of traffic, 100 deliveries): its next
# round makes several messages of `workers.actor.BATCH_SIZE` (16) deliveries.
PILED_UP_EVENTS = 60
# Dramatiq's Redis lists of message ids that no worker has fetched yet (ready, delayed).
QUEUE_LISTS = ("dramatiq:deliveries", "dramatiq:deliveries.DQ")
DB_CONFLICT_WORDS = ("IntegrityError", "UniqueViolation")
NO_API_ERRORS = Allowance()
# While the process that serves the API is down and starting again: refused connections,
# and requests cut off by the kill; at most about 3 s of traffic (creations and
# completions, sent again every 50 ms while refused).
SERVICE_RESTART = Allowance(
    at_most=100, kinds=frozenset({"ConnectError", "RemoteProtocolError", "ReadError"})
)
# The same with 8 connections at once: each sends again every 50 ms while refused.
BURST_RESTART = Allowance(at_most=400, kinds=SERVICE_RESTART.kinds)
# PostgreSQL restarted under the stack: while it is down (PG_DOWN_S) the API answers
# 503, within API_ANSWER_S (a client's patience: no hang), and never 500; /readyz too.
# Once it is back, /readyz says so and deliveries resume within RECOVER_WITHIN_S, and
# everything has converged within PG_CONVERGE_WITHIN_S.
PG_DOWN_S = 4.0
API_ANSWER_S = 5.0
RECOVER_WITHIN_S = 10.0
PG_CONVERGE_WITHIN_S = 30.0
PG_CONVERGE_TIMEOUT_S = 45.0
# About 8 s of traffic at 25 surveys and 12 completions a second.
PG_OUTAGE = Allowance(at_most=300, kinds=frozenset({"503"}))
# The disk refuses every write of `webhooks serve` until enough API calls have failed
# (about 1.5 s of traffic at 20 surveys and 10 completions a second); 503 only.
DISK_FAILED_CALLS = 40
DISK_REFUSED = Allowance(at_most=150, kinds=frozenset({"503"}))
DISK_CONVERGE_TIMEOUT_S = 45.0
# An endpoint that never finishes beside healthy ones: two 6 s phases (without it, then
# with it) of two tenants at 15 surveys a second each, 75 healthy deliveries a second.
HANG_SURVEYS = 90
HANG_RATE_PER_S = 15.0
HEALTHY_CONVERGE_S = 20.0
RSS_GROWTH_MAX_MB = 50.0


@dataclass
class Suite:
    """What the whole module shares: the figures, every secret created, every stack."""

    report: Report
    secrets: list[str] = field(default_factory=list)
    stacks: list[FaultStack] = field(default_factory=list)


@dataclass
class Env:
    stack: FaultStack
    receiver: FaultReceiver
    audit: Audit
    private_redis: RedisServer | None = None
    postgres: PostgresInstance | None = None
    """The stack's own PostgreSQL server, when the test may stop it."""
    traffic: Traffic | None = None
    """The running scenario's traffic, for faults that wait on it."""

    @property
    def redis(self) -> RedisServer:
        assert self.private_redis is not None, "this stack runs without Redis"
        return self.private_redis

    def queued(self) -> int:
        """Messages in Redis that no worker has fetched yet: what a FLUSHALL loses for good
        (prefetched messages live on in the workers' memory)."""
        with redis.Redis.from_url(self.redis.url) as client:
            return sum(int(client.llen(name)) for name in QUEUE_LISTS)

    def restore(self) -> None:
        """Undo whatever a failed scenario may have left: a paused or stopped Redis, a
        stopped PostgreSQL, a failing receiver."""
        self.receiver.mode = Mode.OK
        if self.postgres is not None and not self.postgres.running:
            self.postgres.start()
        if self.private_redis is None:
            return
        process = self.private_redis.process
        if process is None:
            self.private_redis.start()
        elif process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    shared = Suite(Report(tmp_path_factory.mktemp("faults-report") / "figures.txt"))
    yield shared
    if shared.report.rows:
        print(f"\n\nfault injection figures\n{table(shared.report.rows)}")
        print(f"(written to {shared.report.path})")


@pytest.fixture(scope="module")
def receiver() -> Iterator[FaultReceiver]:
    with FaultReceiver(slow_s=1.0, hang_s=3.0).running() as running:
        assert isinstance(running, FaultReceiver)
        yield running


@pytest.fixture(scope="module")
def env(
    suite: Suite, receiver: FaultReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    """PostgreSQL, a private Redis, web, poller1, poller2, worker1, worker2."""
    log_dir = tmp_path_factory.mktemp("procfile")
    with postgres_database() as database_url, redis_server() as server:
        port = free_port()
        stack = FaultStack(stack_env(database_url, server.url, port, **SETTINGS), log_dir, port)
        suite.stacks.append(stack)
        running = Env(stack, receiver, Audit(database_url), server)
        try:
            start_procfile(stack)
            yield running
        finally:
            running.restore()
            stack.stop()
            running.audit.close()


def start_procfile(stack: FaultStack, *, pollers: int = 2, workers: int = 2) -> None:
    """web, then `pollers` pollers and `workers` workers, each up."""
    stack.start("web", procfile()["web"])
    started = [stack.start_role("poller", wait=False) for _ in range(pollers)]
    started += [stack.start_role("worker", wait=False) for _ in range(workers)]
    stack.wait_ready()
    for process in started:
        wait_started(process, process.name.rstrip("0123456789"))


@dataclass
class Run:
    """One scenario's tenant and traffic, and what became of them."""

    fault: str
    tenant: Tenant
    traffic: Traffic
    allowance: Allowance
    outcome: Outcome
    row: Figures


def drive(
    env: Env,
    suite: Suite,
    fault: str,
    inject: Inject,
    *,
    surveys: int = SURVEYS,
    rate_per_s: float = RATE_PER_S,
    inject_after: int = INJECT_AFTER_SURVEYS,
    lanes: int = 1,
    allowance: Allowance = NO_API_ERRORS,
    converge_timeout_s: float = CONVERGE_TIMEOUT_S,
    request_timeout_s: float = 15,
    check: Callable[[], None] | None = None,
    record: bool = True,
) -> Run:
    """Run traffic of a new tenant, `inject` the fault while it flows, wait for
    convergence (running `check`, by default that every process runs, on each round) and
    record the figures; check nothing else (see `run_problems`)."""
    # Given a new tenant and steady traffic
    tenant = create_tenant(env.stack, env.receiver, fault.split()[0].lower())
    suite.secrets += tenant.secrets()
    before = env.stack.log_sizes()
    traffic = Traffic(
        env.stack.base_url,
        tenant,
        surveys=surveys,
        rate_per_s=rate_per_s,
        lanes=lanes,
        timeout_s=request_timeout_s,
    )
    env.traffic = traffic
    traffic.start()
    # When the fault is injected while events flow
    traffic.wait_created(inject_after)
    try:
        note = inject()
    finally:
        env.restore()
    fault_ended_at = time.monotonic()
    traffic.finish()
    # Then every delivery converges to `delivered` and every pair reached the receiver
    outcome = converge(
        env.audit,
        env.receiver,
        tenant,
        timeout_s=converge_timeout_s,
        check=env.stack.assert_alive if check is None else check,
    )
    row = figures(
        fault,
        outcome,
        fault_ended_at=fault_ended_at,
        last_event_at=max(traffic.last_event_at, fault_ended_at),
        swept=swept_since(env.stack, before, "poller", "serve"),
        traffic=traffic,
        allowance=allowance,
        note=note,
    )
    if record:
        suite.report.add(row)
    return Run(fault, tenant, traffic, allowance, outcome, row)


def run_problems(env: Env, run: Run, *, timeout_s: float = CONVERGE_TIMEOUT_S) -> list[str]:
    """Every way `run` broke the contract: not converged, an event lost, API errors the
    scenario does not allow, a confirmed survey or completion that never reached the
    receiver, an event the API confirmed missing from the outbox, a pair delivered under
    two webhook ids, a wrong token."""
    outcome, row, traffic = run.outcome, run.row, run.traffic
    problems = []
    if outcome.converged_at is None:
        problems.append(
            f"{run.fault}: not converged in {timeout_s} s: {explain(outcome)}\n{env.stack.logs()}"
        )
    elif row.lost:
        problems.append(explain(outcome))
    problems += api_problems(traffic, run.allowance)
    missing = undelivered(
        env.receiver, run.tenant, created=traffic.created, completed=traffic.completed
    )
    if missing:
        problems.append(
            f"{len(missing)} events the API confirmed never reached the receiver: {missing[:5]}"
        )
    # Every event the API confirmed is in the outbox (a lost write would not be expected).
    survey_ids = outcome.state.survey_ids
    if not set(traffic.created) <= survey_ids.get("survey_created", set()):
        problems.append("a survey that got a 201 has no survey_created event")
    if not set(traffic.completed) <= survey_ids.get("survey_finished", set()):
        problems.append("a completion that got a 200 has no survey_finished event")
    if not row.events >= len(traffic.created) + len(traffic.completed) > 0:
        problems.append(f"{row.events} events for {len(traffic.created)} surveys created")
    # One delivery, with one webhook id kept across retries, for each pair.
    ids = {delivery.pair: delivery.id for delivery in outcome.state.deliveries}
    for pair, webhook_ids in outcome.seen.accepted_pairs.items():
        if webhook_ids != {ids.get(pair)}:
            problems.append(f"{pair} accepted as {webhook_ids}, its delivery is {ids.get(pair)}")
    if outcome.seen.wrong_token:
        problems.append(f"{outcome.seen.wrong_token} requests with a wrong token")
    # Nothing half-written: each survey with its events, each event with its survey.
    problems += env.audit.half_written(run.tenant.client_id)
    return problems


def assert_none(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


def run_fault(
    env: Env,
    suite: Suite,
    fault: str,
    inject: Inject,
    **options: Any,
) -> Run:
    """`drive`, check that nothing broke the contract, and that every poller and every
    worker still works on its own."""
    run = drive(env, suite, fault, inject, **options)
    timeout_s = options.get("converge_timeout_s", CONVERGE_TIMEOUT_S)
    assert_none(run_problems(env, run, timeout_s=timeout_s))
    env.stack.assert_alive()
    for role in ("poller", "worker"):
        probe_each(env, run.tenant, role)
    return run


def probe_each(env: Env, tenant: Tenant, role: str) -> None:
    """With the other `role` processes paused (SIGSTOP), one new survey still reaches the
    receiver: each poller fans out and each worker delivers on its own, so none of them
    is stuck after the fault (a stuck one would hide behind the others otherwise)."""
    names = env.stack.names(role)
    for name in names:
        others = [env.stack.processes[other] for other in names if other != name]
        for process in others:
            process.signal(signal.SIGSTOP)
        try:
            survey_id = create_survey(env.stack.base_url, tenant)
            wait_for(
                partial(accepted, env.receiver, tenant, survey_id),
                timeout_s=PROBE_TIMEOUT_S,
                what=f"{name} alone to get survey {survey_id} delivered",
            )
        finally:
            for process in others:
                process.signal(signal.SIGCONT)


def test_pollers_and_workers_side_by_side_never_duplicate(env: Env, suite: Suite) -> None:
    # Given two pollers and two workers and no fault at all
    assert len(env.stack.names("poller")) == 2 and len(env.stack.names("worker")) == 2
    before = env.stack.log_sizes()
    # When a few hundred events flow
    row = run_fault(
        env,
        suite,
        "none (2 pollers, 2 workers)",
        lambda: "",
        surveys=300,
        rate_per_s=40,
        inject_after=300,  # "the end of the fault" is the end of the traffic
    ).row
    # Then one delivery per pair, sent exactly once
    assert env.audit.repeated_pairs() == []
    assert row.duplicates == 0
    assert row.refused == 0
    assert row.requests == row.deliveries
    for process in env.stack.all_processes():
        for word in DB_CONFLICT_WORDS:
            assert word not in process.log(), f"{process.name} logged {word}"
    # and both workers took part
    for name in env.stack.names("worker"):
        assert attempts_since(env.stack.processes[name], before) > 0, f"{name} idle"


def test_worker_killed_in_the_middle_of_requests(env: Env, suite: Suite) -> None:
    in_flight_at_kill: list[int] = []

    def inject() -> str:
        env.receiver.mode = Mode.SLOW
        # 8 open at once is every lane of both workers (2 configurations, 2 requests to
        # each a worker), so the one killed has requests open: they last `slow_s`.
        wait_for(lambda: env.receiver.in_flight >= 8, timeout_s=30, what="requests in flight")
        in_flight_at_kill.append(env.receiver.in_flight)
        env.stack.kill(env.stack.names("worker")[0])
        env.receiver.mode = Mode.OK
        env.stack.start_role("worker")
        return f"{in_flight_at_kill[0]} requests in flight (both workers) at the kill"

    row = run_fault(env, suite, "worker SIGKILL mid-request", inject, inject_after=120).row
    # The killed worker's requests were answered to nobody, so they were sent again: the
    # proof that the fault hit requests in flight (at least once, never zero).
    assert in_flight_at_kill[0] >= 8
    assert row.duplicates >= 1


def test_poller_killed_while_events_flow(env: Env, suite: Suite) -> None:
    def inject() -> str:
        env.stack.kill(env.stack.names("poller")[0])
        env.stack.start_role("poller")
        return "at a random moment"

    row = run_fault(env, suite, "poller SIGKILL while events flow", inject, inject_after=140).row
    assert row.duplicates == 0


def test_poller_killed_between_fan_out_and_enqueue(env: Env, suite: Suite) -> None:
    # Pausing Redis (SIGSTOP) makes every poller that fans out block in its enqueue right
    # after the fan-out transaction committed (the events marked dispatched, the
    # deliveries written). Both pollers are killed then, so whichever claimed the events
    # (SKIP LOCKED may hand them all to one) dies exactly in that window. The pollers are
    # held back first so that events pile up: their round then makes several messages,
    # and those after the first are never sent (Redis still runs the first one, which
    # sat in its socket buffer, when it resumes).
    def inject() -> str:
        assert env.redis.process is not None and env.traffic is not None
        client_id = env.traffic.tenant.client_id
        pollers = [env.stack.processes[name] for name in env.stack.names("poller")]
        for poller in pollers:
            poller.signal(signal.SIGSTOP)
        wait_for(
            lambda: env.audit.fan_out(client_id)[1] >= PILED_UP_EVENTS,
            timeout_s=30,
            what=f"{PILED_UP_EVENTS} events waiting for a poller",
        )
        os.kill(env.redis.process.pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        try:
            dispatched, waiting = env.audit.fan_out(client_id)
            for poller in pollers:
                poller.signal(signal.SIGCONT)
            # Every piled-up event fanned out since. Any one commit would not do: a poller
            # stopped inside its transaction commits a small batch on SIGCONT (one message,
            # which Redis still runs), and killing then strands nothing. With all of them
            # committed, at most one fan-out per poller took them (a poller that commits
            # blocks in its enqueue), so one of them made several messages.
            wait_for(
                lambda: env.audit.fan_out(client_id)[0] >= dispatched + waiting,
                timeout_s=30,
                what="the pollers to fan out the events that piled up",
            )
            for poller in pollers:
                env.stack.kill(poller.name)
        finally:
            os.kill(env.redis.process.pid, signal.SIGCONT)
        for _ in pollers:
            env.stack.start_role("poller")
        paused_s = time.monotonic() - paused_at
        return f"{waiting} events piled up; blocked in enqueue (Redis paused {paused_s:.1f} s)"

    row = run_fault(
        env, suite, "poller SIGKILL between fan-out and enqueue", inject, inject_after=100
    ).row
    assert row.swept >= 1, "nothing was stranded: the kill missed the window"
    assert row.duplicates == 0


def test_web_killed_during_a_burst_of_creations(env: Env, suite: Suite) -> None:
    # Given 8 clients creating surveys at once (a burst of 100 a second)
    window: list[float] = []
    in_flight_at_kill: list[int] = []

    def inject() -> str:
        traffic = env.traffic
        assert traffic is not None
        # When web is SIGKILLed with requests in flight, then started again (it is paused
        # first, so that requests are surely open in it: a quick web rarely has four)
        env.stack.processes["web"].signal(signal.SIGSTOP)
        wait_for(lambda: traffic.in_flight >= 4, timeout_s=30, what="API requests in flight")
        in_flight_at_kill.append(traffic.in_flight)
        window.append(time.monotonic())
        env.stack.kill("web")
        env.stack.start_role("web", wait=False)
        env.stack.wait_ready()
        window.append(time.monotonic())
        return (
            f"{in_flight_at_kill[0]} API requests in flight at the kill, "
            f"down {window[1] - window[0]:.1f} s"
        )

    run = run_fault(
        env,
        suite,
        "web SIGKILL during a burst of creations",
        inject,
        surveys=450,
        rate_per_s=100,
        lanes=8,
        inject_after=120,
        allowance=BURST_RESTART,
    )
    # Then every survey that got a 201 was delivered and nothing is half-written (both
    # checked by run_fault), and the API failed only around the kill: requests cut off by
    # it, and connections refused until web was back.
    killed_at, back_at = window
    failures = run.traffic.failures
    assert all(killed_at - 1 <= failure.at <= back_at for failure in failures), [
        (round(failure.at - killed_at, 2), failure.kind) for failure in failures
    ]
    # (the proof that the kill hit requests in flight)
    assert any(failure.kind != "ConnectError" for failure in failures)
    assert run.row.duplicates == 0


@pytest.fixture
def pg_env(
    suite: Suite, receiver: FaultReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    """The production topology on a PostgreSQL server of this test's own (which it stops
    and starts; the shared one is never touched) and a private Redis."""
    log_dir = tmp_path_factory.mktemp("pg-restart")
    with postgres_instance() as server, redis_server() as broker:
        port = free_port()
        stack = FaultStack(stack_env(server.url, broker.url, port, **SETTINGS), log_dir, port)
        suite.stacks.append(stack)
        stack.cli("migrate")
        running = Env(stack, receiver, Audit(server.url), broker, postgres=server)
        try:
            start_procfile(stack)
            yield running
        finally:
            running.restore()
            stack.stop()
            with contextlib.suppress(Exception):  # a pool left broken by the restart
                running.audit.close()


def test_postgresql_restarted_mid_load(pg_env: Env, suite: Suite) -> None:
    env, server = pg_env, pg_env.postgres
    assert server is not None
    pids = {name: process.popen.pid for name, process in env.stack.processes.items()}
    readyz = Prober(env.stack.base_url + "/readyz", timeout_s=API_ANSWER_S)
    at: dict[str, float] = {}
    waiting: list[int] = []
    before = env.stack.log_sizes()

    def ready_again() -> bool:
        return any(sample.status == 200 for sample in readyz.between(at["back"], math.inf))

    def inject() -> str:
        # When PostgreSQL stops (fast: open transactions rolled back, connections closed)
        # for a few seconds while the traffic goes on, and starts again
        readyz.start()
        # Transactions in flight at the stop: with the tables the pollers, web and the
        # workers write locked, their next transactions wait for the lock (each poller's
        # fan-out at least), and the stop ends them there (what a restart does to a busy
        # database).
        holder = _hold_tables(server.url, "outbox", "deliveries")
        pollers = len(env.stack.names("poller"))
        wait_for(
            lambda: _waiting_on_locks(server.url, FAN_OUT_CLAIM) >= pollers,
            timeout_s=10,
            what="each poller waiting inside its fan-out transaction",
        )
        waiting.append(_waiting_on_locks(server.url))
        at["stop"] = time.monotonic()
        server.stop()
        holder.wait(timeout=10)
        at["down"] = time.monotonic()
        time.sleep(PG_DOWN_S)  # the length of the outage, not a wait for anything
        at["start"] = time.monotonic()
        server.start()
        at["back"], at["back_wall"] = time.monotonic(), time.time()
        env.audit.reconnect()
        with contextlib.suppress(AssertionError):  # judged below, with everything else
            wait_for(ready_again, timeout_s=RECOVER_WITHIN_S, what="/readyz 200")
        readyz.finish()
        return ""

    run = drive(
        env,
        suite,
        f"PostgreSQL stopped {PG_DOWN_S:.0f} s and started",
        inject,
        surveys=350,  # 14 s: 4 before the outage, 5 or so after
        inject_after=100,
        allowance=PG_OUTAGE,
        request_timeout_s=API_ANSWER_S,
        converge_timeout_s=PG_CONVERGE_TIMEOUT_S,
        check=lambda: None,  # a process that ended is reported below with the rest
        record=False,
    )
    # Then, while it was down, the API and /readyz answered 503 with JSON, at once
    problems = []
    down = readyz.between(at["down"], at["start"])
    if not down:
        problems.append("/readyz was not asked while PostgreSQL was down")
    for sample in down:
        if sample.status != 503 or not _json_object(sample.body):
            problems.append(
                f"/readyz answered {sample.status or sample.error} after {sample.elapsed_s:.1f} s "
                f"while PostgreSQL was down: {sample.body[:200]!r}"
            )
            break
    refused_while_down = [
        failure for failure in run.traffic.failures if at["down"] <= failure.at <= at["start"]
    ]
    if len(refused_while_down) < 10:
        problems.append(
            f"only {len(refused_while_down)} API calls failed while PostgreSQL was down"
        )
    slowest = max((failure.elapsed_s for failure in run.traffic.failures), default=0.0)
    late = [
        failure
        for failure in run.traffic.failures
        if failure.at > at["back"] + RECOVER_WITHIN_S or failure.at < at["stop"] - API_ANSWER_S
    ]
    if late:
        problems.append(
            f"{len(late)} API calls failed outside the outage (+{RECOVER_WITHIN_S} s), e.g. "
            f"{late[0].kind} {late[0].at - at['back']:.1f} s after PostgreSQL was back"
        )
    # and /readyz answered 200 again once it was back
    ready_s = next(
        (s.at - at["back"] for s in readyz.between(at["back"], math.inf) if s.status == 200), None
    )
    if ready_s is None:
        after = Counter(s.status or s.error for s in readyz.between(at["back"], math.inf))
        problems.append(
            f"/readyz not 200 within {RECOVER_WITHIN_S} s of PostgreSQL back: {dict(after)}"
        )
    # and every process recovered without a restart: the same PIDs, all running
    for name, process in env.stack.processes.items():
        code = process.popen.poll()
        if process.popen.pid != pids.get(name) or code is not None:
            problems.append(f"{name} did not survive the outage (exit code {code})")
    # and deliveries resumed within seconds, and converged
    resumed_s = next(
        (
            item.at - at["back_wall"]
            for item in sorted(env.receiver.answered(run.tenant.prefix), key=lambda i: i.at)
            if item.at >= at["back_wall"] and item.accepted
        ),
        None,
    )
    converged_s = (
        None if run.outcome.converged_at is None else run.outcome.converged_at - at["back"]
    )
    if resumed_s is None or resumed_s > RECOVER_WITHIN_S:
        problems.append(f"first delivery after PostgreSQL was back: {_secs(resumed_s)}")
    if converged_s is None or converged_s > PG_CONVERGE_WITHIN_S:
        problems.append(f"converged after PostgreSQL was back: {_secs(converged_s)}")
    statuses_down = dict(Counter(sample.status or sample.error for sample in down))
    run.row.note = (
        f"{waiting[0]} transactions waiting at the stop; /readyz while down {statuses_down}, "
        f"200 again {_secs(ready_s)} after; slowest API error {slowest:.1f} s; "
        f"first delivery {_secs(resumed_s)} and converged {_secs(converged_s)} after PG back"
    )
    suite.report.add(run.row)
    problems += run_problems(env, run, timeout_s=PG_CONVERGE_TIMEOUT_S)
    if problems:
        problems.append("errors logged since the fault:\n" + error_digest(env.stack, before))
    assert_none(problems)
    for role in ("poller", "worker"):
        probe_each(env, run.tenant, role)


# The statement with which a poller's fan-out transaction claims events.
FAN_OUT_CLAIM = "%FROM outbox%FOR UPDATE SKIP LOCKED%"


def _hold_tables(database_url: str, *tables: str) -> subprocess.Popen[bytes]:
    """A session that locks `tables` (ACCESS EXCLUSIVE: no one reads or writes them)
    until PostgreSQL stops; locked once `_waiting_on_locks` counts the first waiter."""
    sql = f"BEGIN; LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600)"
    return subprocess.Popen(
        ["psql", database_url, "-q", "-c", sql],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _waiting_on_locks(database_url: str, like: str = "%") -> int:
    """Sessions waiting for a lock, whose statement is `LIKE like`."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        f"AND query LIKE '{like}'"
    )
    result = subprocess.run(
        ["psql", database_url, "-At", "-c", sql], capture_output=True, text=True, check=True
    )
    return int(result.stdout)


def _json_object(body: str) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


@pytest.fixture
def own_env(
    suite: Suite, receiver: FaultReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    """web, a poller and two workers on a database and a Redis of this test's own: for
    faults that leave work behind them (an endpoint that keeps failing)."""
    log_dir = tmp_path_factory.mktemp("own")
    with postgres_database() as database_url, redis_server() as server:
        port = free_port()
        stack = FaultStack(stack_env(database_url, server.url, port, **SETTINGS), log_dir, port)
        suite.stacks.append(stack)
        running = Env(stack, receiver, Audit(database_url), server)
        try:
            start_procfile(stack, pollers=1, workers=2)
            yield running
        finally:
            receiver.modes.clear()
            running.restore()
            stack.stop()
            running.audit.close()


@dataclass
class Phase:
    """Load on several tenants at once, and the rate at which healthy configurations
    received it while it ran."""

    traffic: list[Traffic]
    started: float
    ended: float
    rate_per_s: float


def run_phase(env: Env, tenants: list[Tenant], healthy: set[str]) -> Phase:
    """`HANG_SURVEYS` surveys per tenant at `HANG_RATE_PER_S` each; the rate counts the
    requests accepted at the `healthy` paths while the load ran."""
    traffic = [
        Traffic(env.stack.base_url, tenant, surveys=HANG_SURVEYS, rate_per_s=HANG_RATE_PER_S)
        for tenant in tenants
    ]
    started, started_wall = time.monotonic(), time.time()
    for each in traffic:
        each.start()
    for each in traffic:
        each.finish()
    ended = time.monotonic()
    ended_wall = started_wall + (ended - started)
    count = sum(
        1
        for tenant in tenants
        for item in env.receiver.answered(tenant.prefix)
        if item.path in healthy and item.accepted and started_wall <= item.at <= ended_wall
    )
    return Phase(traffic, started, ended, count / (ended - started))


def wait_healthy(
    env: Env, tenants: list[Tenant], phases: list[Phase], healthy: set[str], *, timeout_s: float
) -> float | None:
    """Seconds until every event the API confirmed in `phases` was accepted at each
    `healthy` configuration subscribed to it; None if not within `timeout_s`."""
    began = time.monotonic()

    def done() -> bool:
        return not any(
            undelivered(
                env.receiver,
                traffic.tenant,
                created=traffic.created,
                completed=traffic.completed,
                paths=healthy,
            )
            for phase in phases
            for traffic in phase.traffic
        )

    try:
        wait_for(done, timeout_s=timeout_s, what="the healthy configurations' deliveries")
    except AssertionError:
        return None
    return time.monotonic() - began


def rss_mb(process: Process) -> float:
    for line in Path(f"/proc/{process.popen.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {process.name}")


@pytest.mark.parametrize("mode", [Mode.SILENT, Mode.ENDLESS, Mode.TRICKLE])
def test_an_endpoint_that_never_finishes_does_not_starve_the_others(
    own_env: Env, suite: Suite, mode: Mode
) -> None:
    env = own_env
    workers = [env.stack.processes[name] for name in env.stack.names("worker")]
    cap = int(env.stack.env["WEBHOOKS_WORKER_CONCURRENCY"]) * len(workers)
    # Given two clients, each with two healthy configurations, under steady load
    tenants = [create_tenant(env.stack, env.receiver, name) for name in ("busy", "other")]
    healthy = {path for tenant in tenants for path in tenant.configs}
    before = env.stack.log_sizes()
    without = run_phase(env, tenants, healthy)
    calm_s = wait_healthy(env, tenants, [without], healthy, timeout_s=30)
    assert calm_s is not None, "the healthy configurations did not catch up with no fault"
    rss_before = {process.name: rss_mb(process) for process in workers}
    # When one client gets a third configuration whose endpoint never finishes answering
    # (silent: no answer at all; endless: 200 and a body that streams forever; trickle:
    # 200 and a body that comes a byte at a time, forever)
    busy = tenants[0]
    add_config(env.stack, env.receiver, busy, "bad", ["survey_created"])
    env.receiver.modes[busy.prefix + "bad"] = mode
    suite.secrets += [value for tenant in tenants for value in tenant.secrets()]
    with_bad = run_phase(env, tenants, healthy)
    rss_after = {process.name: rss_mb(process) for process in workers}
    # Then the healthy configurations keep at least half their rate
    converge_s = wait_healthy(
        env, tenants, [without, with_bad], healthy, timeout_s=HEALTHY_CONVERGE_S
    )
    prefixes = tuple(tenant.prefix for tenant in tenants)
    peak = env.receiver.peak_open(prefixes, start=with_bad.started, end=time.monotonic())
    growth_mb = max(rss_after[name] - rss_before[name] for name in rss_before)
    share = with_bad.rate_per_s / without.rate_per_s
    traffic = [*without.traffic, *with_bad.traffic]
    failures = [failure for each in traffic for failure in each.failures]
    saw = [seen(env.receiver, tenant) for tenant in tenants]
    lost = [
        missing
        for each in traffic
        for missing in undelivered(
            env.receiver,
            each.tenant,
            created=each.created,
            completed=each.completed,
            paths=healthy,
        )
    ]
    suite.report.add(
        Figures(
            fault=f"endpoint {mode} beside healthy ones",
            events=sum(len(each.created) + len(each.completed) for each in traffic),
            deliveries=sum(len(each.created) * 2 + len(each.completed) for each in traffic),
            requests=sum(each.requests for each in saw),
            lost=len(lost),
            duplicates=sum(each.duplicates for each in saw),
            refused=sum(each.refused for each in saw),
            swept=swept_since(env.stack, before, "poller"),
            api_errors=len(failures),
            converge_s=converge_s,
            after_last_event_s=converge_s,
            note=(
                f"healthy {without.rate_per_s:.1f}/s without, {with_bad.rate_per_s:.1f}/s "
                f"with ({share:.0%}); peak {peak} open (cap {cap}); worker RSS "
                f"{', '.join(f'{rss_before[n]:.0f}->{rss_after[n]:.0f}' for n in rss_before)} MB"
            ),
            api_error_kinds=dict(Counter(failure.kind for failure in failures)),
        )
    )
    problems = []
    if share < 0.5:
        problems.append(
            f"healthy configurations: {with_bad.rate_per_s:.1f} deliveries/s beside the {mode} "
            f"endpoint, {without.rate_per_s:.1f}/s without it ({share:.0%}, at least 50% wanted)"
        )
    if converge_s is None or lost:
        problems.append(
            f"{len(lost)} healthy deliveries still missing {HEALTHY_CONVERGE_S} s after the load"
        )
    # and the workers stay within their memory and their concurrency
    if growth_mb > RSS_GROWTH_MAX_MB:
        problems.append(f"a worker grew by {growth_mb:.0f} MB (at most {RSS_GROWTH_MAX_MB})")
    if peak > cap:
        problems.append(f"{peak} requests open at once, more than {cap} (workers x concurrency)")
    problems += [
        f"{each.tenant.prefix}: {p}" for each in traffic for p in api_problems(each, NO_API_ERRORS)
    ]
    if problems:
        problems.append("errors logged:\n" + error_digest(env.stack, before))
    assert_none(problems)
    env.stack.assert_alive()


@contextlib.contextmanager
def _backlog(env: Env) -> Iterator[None]:
    """Pause the workers (SIGSTOP) until Redis holds messages that no worker has fetched;
    they resume on leaving, which must come soon: a worker paused for longer than the
    lease has its deliveries in flight taken over, and sent twice. (A slow receiver no
    longer builds such a backlog: a worker takes each message and releases what its
    endpoint's lane cannot take yet.)"""
    workers = [env.stack.processes[name] for name in env.stack.names("worker")]
    for worker in workers:
        worker.signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: env.queued() >= BACKLOG_MESSAGES,
            timeout_s=30,
            what=f"{BACKLOG_MESSAGES} queued messages",
        )
        yield
    finally:
        for worker in workers:
            worker.signal(signal.SIGCONT)


def test_redis_flushall_while_events_flow(env: Env, suite: Suite) -> None:
    dropped: list[int] = []

    def inject() -> str:
        with _backlog(env), redis.Redis.from_url(env.redis.url) as client:
            dropped.append(env.queued())
            client.flushall()
        return f"{dropped[0]} unfetched messages flushed"

    row = run_fault(env, suite, "Redis FLUSHALL", inject, inject_after=100).row
    assert dropped[0] >= BACKLOG_MESSAGES
    assert row.swept >= 1, "the flushed messages came back without the sweep?"
    assert row.duplicates == 0


def test_redis_stopped_and_started_while_events_flow(env: Env, suite: Suite) -> None:
    dropped: list[int] = []

    def inject() -> str:
        # The workers resume as Redis goes: paused past their leases, they would have
        # their requests in flight taken over and sent again.
        with _backlog(env):
            dropped.append(env.queued())
            env.redis.stop()
        time.sleep(2.0)  # the outage itself, not a wait for anything
        env.redis.start()
        return f"{dropped[0]} unfetched messages lost"

    row = run_fault(env, suite, "Redis stopped 2 s and restarted", inject, inject_after=90).row
    assert row.swept >= 1
    assert row.duplicates == 0


def test_receiver_answers_503_for_a_while(env: Env, suite: Suite) -> None:
    def inject() -> str:
        env.receiver.mode = Mode.UNAVAILABLE
        time.sleep(3.0)  # the fault's length, not a wait for anything
        env.receiver.mode = Mode.OK
        return ""

    row = run_fault(env, suite, "receiver 503 for 3 s", inject, inject_after=110).row
    assert row.refused > 0
    assert row.duplicates == 0


def test_receiver_times_out_for_a_while(env: Env, suite: Suite) -> None:
    def inject() -> str:
        env.receiver.mode = Mode.HANGING
        time.sleep(4.0)  # the fault's length, not a wait for anything
        env.receiver.mode = Mode.OK
        return f"held {env.receiver.hang_s} s, timeout {SETTINGS['WEBHOOKS_REQUEST_TIMEOUT_S']} s"

    row = run_fault(env, suite, "receiver times out for 4 s", inject, inject_after=90).row
    assert row.refused > 0
    assert row.duplicates == 0


SERVE = f"{shlex.quote(WEBHOOKS)} serve"
# The log through a pipe to `cat`, a process of its own: a file size limit put on serve
# then leaves its log alone (bash's process substitution; serve keeps its PID).
SERVE_LOGGING_THROUGH_A_PIPE = f"{SERVE} > >(cat) 2>&1"


@contextlib.contextmanager
def serve_stack(
    suite: Suite, receiver: FaultReceiver, log_dir: Path, command: str
) -> Iterator[Env]:
    """`webhooks serve` alone on SQLite, no Redis, started with `command`."""
    database_url = f"sqlite:///{log_dir / 'webhooks.db'}"
    port = free_port()
    stack = FaultStack(stack_env(database_url, None, port, **SETTINGS), log_dir, port)
    suite.stacks.append(stack)
    stack.cli("migrate")
    running = Env(stack, receiver, Audit(database_url))
    try:
        stack.start_role("serve", command, wait=False)
        stack.wait_ready()
        yield running
    finally:
        running.receiver.mode = Mode.OK
        stack.stop()
        running.audit.close()


@pytest.fixture
def serve_env(
    suite: Suite, receiver: FaultReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    with serve_stack(suite, receiver, tmp_path_factory.mktemp("serve"), SERVE) as running:
        yield running


@pytest.fixture
def serve_env_piped(
    suite: Suite, receiver: FaultReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    """`serve_env` with the log written by another process."""
    log_dir = tmp_path_factory.mktemp("serve-piped")
    with serve_stack(suite, receiver, log_dir, SERVE_LOGGING_THROUGH_A_PIPE) as running:
        yield running


def test_serve_killed_and_restarted_on_sqlite(serve_env: Env, suite: Suite) -> None:
    stack = serve_env.stack

    def inject() -> str:
        serve_env.receiver.mode = Mode.SLOW
        # Every lane open (2 configurations, 2 requests to each): they last `slow_s`.
        wait_for(lambda: serve_env.receiver.in_flight >= 4, timeout_s=30, what="requests in flight")
        in_flight = serve_env.receiver.in_flight
        stack.kill(stack.names("serve")[0])
        serve_env.receiver.mode = Mode.OK
        # Same DATABASE_URL and PORT: the same environment.
        stack.start_role("serve", SERVE, wait=False)
        stack.wait_ready()
        return f"{in_flight} requests in flight at the kill"

    row = run_fault(
        serve_env,
        suite,
        "webhooks serve SIGKILL + restart (SQLite)",
        inject,
        surveys=150,
        rate_per_s=20,
        inject_after=90,
        allowance=SERVICE_RESTART,
    ).row
    assert row.duplicates >= 1  # the requests in flight at the kill were sent again


def test_serve_on_sqlite_when_the_disk_refuses_writes(serve_env_piped: Env, suite: Suite) -> None:
    stack = serve_env_piped.stack
    process = stack.processes[stack.names("serve")[0]]
    if shutil.which("prlimit") is None:
        missing("prlimit (util-linux)")
    # CPython ignores SIGXFSZ from the start, so a write past the limit fails with EFBIG
    # instead of killing the process: a disk that refuses writes, not a crash.
    assert _ignores(process.popen.pid, signal.SIGXFSZ)
    at: dict[str, float] = {}

    def inject() -> str:
        traffic = serve_env_piped.traffic
        assert traffic is not None
        # When no file of the process may grow past 1 byte (every write of the database,
        # its WAL and its log fails with EFBIG) while surveys arrive, then it may again
        failed_before = traffic.failed_requests
        at["refused"] = time.monotonic()
        _limit_file_size(process.popen.pid, "1")
        try:
            wait_for(
                lambda: traffic.failed_requests - failed_before >= DISK_FAILED_CALLS,
                timeout_s=30,
                what=f"{DISK_FAILED_CALLS} API calls refused while the disk refuses writes",
            )
        finally:
            _limit_file_size(process.popen.pid, "unlimited")
            at["lifted"] = time.monotonic()
        return f"writes refused {at['lifted'] - at['refused']:.1f} s (RLIMIT_FSIZE 1 byte)"

    run = drive(
        serve_env_piped,
        suite,
        "SQLite: disk refuses writes (serve)",
        inject,
        surveys=200,
        rate_per_s=20,
        inject_after=60,
        allowance=DISK_REFUSED,
        request_timeout_s=API_ANSWER_S,
        converge_timeout_s=DISK_CONVERGE_TIMEOUT_S,
    )
    # Then the API answered 503 with the JSON envelope while writes failed (no 500, no
    # hang), and only then; nothing is half-written; every 201 was delivered (all three
    # checked by run_problems); the same process recovered and works
    problems = run_problems(serve_env_piped, run, timeout_s=DISK_CONVERGE_TIMEOUT_S)
    late = [
        failure
        for failure in run.traffic.failures
        if not at["refused"] - API_ANSWER_S <= failure.at <= at["lifted"] + RECOVER_WITHIN_S
    ]
    if late:
        problems.append(
            f"{len(late)} API calls failed outside the fault (+{RECOVER_WITHIN_S} s), e.g. "
            f"{late[0].kind} {late[0].at - at['lifted']:.1f} s after the limit was lifted"
        )
    if process.popen.poll() is not None:
        problems.append(f"serve ended (exit code {process.popen.returncode})")
    if problems:
        problems.append("errors logged:\n" + error_digest(stack, {}))
    assert_none(problems)
    probe_each(serve_env_piped, run.tenant, "serve")


def _ignores(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` ignores `sig` (the SigIgn mask of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def _limit_file_size(pid: int, limit: str) -> None:
    """The soft RLIMIT_FSIZE of a running process (`prlimit --pid`); the hard limit stays
    unlimited, so that lifting it again needs no privilege."""
    result = subprocess.run(
        ["prlimit", "--pid", str(pid), f"--fsize={limit}:"], capture_output=True, text=True
    )
    assert result.returncode == 0, f"prlimit: {result.stderr}"


def test_no_secret_in_any_process_log(env: Env, suite: Suite) -> None:
    # Given tokens and secrets that went through successful and failing attempts
    def inject() -> str:
        env.receiver.mode = Mode.UNAVAILABLE
        time.sleep(1.0)  # the fault's length, not a wait for anything
        env.receiver.mode = Mode.OK
        return ""

    run_fault(
        env, suite, "secrets", inject, surveys=40, rate_per_s=20, inject_after=10, record=False
    )
    # When every log of every process of the suite is read
    logs = {
        f"{process.log_path.parent.name}/{process.name}": process.log()
        for stack in suite.stacks
        for process in stack.all_processes()
    }
    # Then the logs are there (attempts are logged with their ids) and hold no secret
    assert any("attempt 1 delivered" in text for text in logs.values())
    assert len(suite.secrets) >= 5
    for name, text in logs.items():
        for value in suite.secrets:
            assert value not in text, f"{name} logged a secret ({value[:6]}...)"
