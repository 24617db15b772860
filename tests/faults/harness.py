"""Fault injection on top of `tests.e2e.harness` and `tests.receivers`: a receiver that
fails on demand, a stack whose processes can be killed and replaced, steady traffic
through the API, a read-only view of the database, and the per-fault figures.

Vocabulary: a *tenant* is one API client with two configurations (one subscribed to
both event types, one to `survey_created` only), so each event is subscribed by one or
two configurations; a *pair* is (configuration id, event type, survey id), what one
delivery carries and what the receiver can identify from the URL path and the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from core.database import Database, open_database, record_dict
from core.tables import deliveries, outbox, surveys, webhook_configs
from tests.e2e.harness import Process, Stack, procfile
from tests.receivers import (
    ENDLESS_CHUNK,
    ENDLESS_INTERVAL_S,
    HOLD_MAX_S,
    TRICKLE_INTERVAL_S,
    Endless,
    Received,
    Receiver,
    disconnected,
)
from tests.servers import wait_for

Pair = tuple[str, str, str]
"""(configuration id, event type, survey id)."""

PROCESS_START_TIMEOUT_S = 60.0
STARTED_LINES = {
    "poller": "poller started",
    "worker": "worker started",
    "serve": "Application startup complete",
}
SWEEP_LINE = re.compile(r"re-enqueueing (\d+) stranded deliveries")
ATTEMPT_LINE = re.compile(r"webhooks\.worker: attempt \d+ ")
ERROR_WORD = re.compile(r"\w(?:Error|Exception)\b")


# -- the receiver ------------------------------------------------------------------


class Mode(StrEnum):
    OK = "ok"
    SLOW = "slow"
    """Answer 200 after `slow_s`, within the service's request timeout."""
    UNAVAILABLE = "unavailable"
    """Answer 503 at once."""
    HANGING = "hanging"
    """Answer only after `hang_s`, past the service's request timeout."""
    SILENT = "silent"
    """Accept the request and never answer: hold it until the client goes away."""
    ENDLESS = "endless"
    """Answer 200 and stream a body that never ends (fast), until the client goes away."""
    TRICKLE = "trickle"
    """Answer 200 and trickle a body that never ends (a byte at a time), until the client
    goes away."""


TIMED_OUT = 0
"""The status recorded for a request that the receiver held past the service's timeout
(or whose body it trickled past it). An `ENDLESS` body is recorded as 200: the worker
reads its first 16 KiB and takes the answer. `SILENT` and `ENDLESS` give up after
`HOLD_MAX_S`, whatever the client does."""


@dataclass
class Answered(Received):
    status: int
    """What the receiver answered in time: 200, 503, or `TIMED_OUT`."""

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class FaultReceiver(Receiver):
    """A `Receiver` that answers every path according to `mode`, switchable at any time,
    or according to `modes` for paths that start with one of its keys. It keeps when
    each request began and ended (`spans`) to tell how many were open at once."""

    mode: Mode = Mode.OK
    modes: dict[str, Mode] = field(default_factory=dict)
    slow_s: float = 1.0
    hang_s: float = 3.0
    in_flight: int = 0
    spans: list[tuple[str, float, float]] = field(default_factory=list)
    """(path, began, ended) in `time.monotonic()`, for each request that ended."""

    def answered(self, prefix: str) -> list[Answered]:
        with self._lock:
            return [
                item
                for item in self.received
                if isinstance(item, Answered) and item.path.startswith(prefix)
            ]

    def peak_open(self, prefixes: tuple[str, ...], *, start: float, end: float) -> int:
        """The most requests to paths under `prefixes` open at one moment in
        [start, end] (`time.monotonic()`), counting those that ended by now."""
        with self._lock:
            spans = [
                (began, ended)
                for path, began, ended in self.spans
                if path.startswith(prefixes) and began <= end and ended >= start
            ]
        edges = sorted([(began, 1) for began, _ in spans] + [(ended, -1) for _, ended in spans])
        peak = current = 0
        for _, step in edges:
            current += step
            peak = max(peak, current)
        return peak

    def _mode(self, path: str) -> Mode:
        matches = [prefix for prefix in self.modes if path.startswith(prefix)]
        return self.modes[max(matches, key=len)] if matches else self.mode

    async def _handle(self, request: Request) -> Response:
        began = time.monotonic()
        body = await request.body()
        mode = self._mode(request.url.path)
        status = {
            Mode.UNAVAILABLE: 503,
            Mode.HANGING: TIMED_OUT,
            Mode.SILENT: TIMED_OUT,
            Mode.TRICKLE: TIMED_OUT,  # the worker never sees the end, nor 16 KiB
        }.get(mode, 200)
        item = Answered(time.time(), request.url.path, dict(request.headers), body, status)
        with self._lock:
            self.received.append(item)
            self.in_flight += 1
        ended = partial(self._ended, item.path, began)
        if mode is Mode.ENDLESS:
            return Endless(chunk=ENDLESS_CHUNK, interval_s=ENDLESS_INTERVAL_S, on_end=ended)
        if mode is Mode.TRICKLE:
            return Endless(chunk=b"x", interval_s=TRICKLE_INTERVAL_S, on_end=ended)
        try:
            if mode is Mode.SLOW:
                await asyncio.sleep(self.slow_s)
            elif mode is Mode.HANGING:
                await asyncio.sleep(self.hang_s)
            elif mode is Mode.SILENT:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(disconnected(request), HOLD_MAX_S)
        finally:
            ended()
        return PlainTextResponse("nope" if status == 503 else "ok", status_code=status or 200)

    def _ended(self, path: str, began: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.spans.append((path, began, time.monotonic()))


# -- the processes -----------------------------------------------------------------


@dataclass
class FaultStack(Stack):
    """A `Stack` whose processes can be SIGKILLed and replaced; killed processes are
    kept in `retired` so that their logs stay readable."""

    retired: list[Process] = field(default_factory=list)
    _started: Counter[str] = field(default_factory=Counter)

    def start_role(self, role: str, command: str | None = None, *, wait: bool = True) -> Process:
        """Start the next `role` (poller1, poller2, ...) with the Procfile's command and,
        unless told not to, wait until it says it is up."""
        self._started[role] += 1
        process = self.start(f"{role}{self._started[role]}", command or procfile()[role])
        if wait:
            wait_started(process, role)
        return process

    def kill(self, name: str) -> Process:
        """SIGKILL: no shutdown handler runs, exactly like a crash."""
        process = self.processes.pop(name)
        process.signal(signal.SIGKILL)
        process.popen.wait(timeout=10)
        process.stop()  # closes the log file
        self.retired.append(process)
        return process

    def names(self, role: str) -> list[str]:
        return [name for name in self.processes if name.startswith(role)]

    def all_processes(self) -> list[Process]:
        return [*self.retired, *self.processes.values()]

    def assert_alive(self) -> None:
        """Every process that the test did not kill still runs."""
        for process in self.processes.values():
            code = process.popen.poll()
            if code is None:
                continue
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            raise AssertionError(
                f"{process.name} ended ({how}), which no fault of this test does:\n"
                f"{process.log()[-3000:]}"
            )

    def log_sizes(self) -> dict[Path, int]:
        return {p.log_path: p.log_path.stat().st_size for p in self.all_processes()}


def wait_started(process: Process, role: str) -> None:
    line = STARTED_LINES.get(role)
    if line is None:
        return

    def started() -> bool:
        if process.popen.poll() is not None:
            raise AssertionError(f"{process.name} exited:\n{process.log()[-3000:]}")
        return line in process.log()

    wait_for(started, timeout_s=PROCESS_START_TIMEOUT_S, what=f"{process.name} to start")


def log_since(path: Path, offsets: dict[Path, int]) -> str:
    with path.open("rb") as handle:
        handle.seek(offsets.get(path, 0))
        return handle.read().decode(errors="replace")


def swept_since(stack: FaultStack, offsets: dict[Path, int], *roles: str) -> int:
    """Stranded deliveries re-enqueued by sweeps since `offsets` (a `log_sizes()`)."""
    return sum(
        int(count)
        for process in stack.all_processes()
        if process.name.startswith(roles)
        for count in SWEEP_LINE.findall(log_since(process.log_path, offsets))
    )


def error_digest(stack: FaultStack, offsets: dict[Path, int], *, per_process: int = 3) -> str:
    """For each process, how many lines of its log since `offsets` name an error or an
    exception, and the first few distinct ones: what a reader of a failure wants first."""
    parts = []
    for process in stack.all_processes():
        lines = [
            line.strip()[:240]
            for line in log_since(process.log_path, offsets).splitlines()
            if ERROR_WORD.search(line)
        ]
        if lines:
            first = list(dict.fromkeys(lines))[:per_process]
            parts.append(f"{process.name}: {len(lines)} lines, e.g. " + " | ".join(first))
    return "\n".join(parts) or "no error in any log"


def attempts_since(process: Process, offsets: dict[Path, int]) -> int:
    return len(ATTEMPT_LINE.findall(log_since(process.log_path, offsets)))


# -- tenants and traffic -----------------------------------------------------------


@dataclass
class Tenant:
    """One API client and its two configurations, reached at `prefix` + a or b."""

    client_id: str
    api_key: str
    prefix: str
    configs: dict[str, dict[str, Any]]
    """By URL path."""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def secrets(self) -> list[str]:
        """Every value that must never appear in a log."""
        values = [self.api_key]
        for config in self.configs.values():
            values += [config["authorization_token"], config["signing_secret"]]
            values.append(config["signing_secret"].removeprefix("whsec_"))
        return values


def create_tenant(stack: Stack, receiver: Receiver, name: str) -> Tenant:
    created = json.loads(stack.cli("client", "create", name))
    tenant = Tenant(created["id"], created["api_key"], f"/{name}-{secrets.token_hex(3)}/", {})
    add_config(stack, receiver, tenant, "a", ["survey_created", "survey_finished"])
    add_config(stack, receiver, tenant, "b", ["survey_created"], token=False)
    return tenant


def add_config(
    stack: Stack,
    receiver: Receiver,
    tenant: Tenant,
    suffix: str,
    events: list[str],
    *,
    token: bool = True,
) -> dict[str, Any]:
    """Create a configuration of `tenant` at its prefix + `suffix` and add it to
    `tenant.configs`; with a token of ours, or (`token=False`) one the service makes."""
    body: dict[str, Any] = {
        "url": receiver.url(tenant.prefix + suffix),
        "subscribed_events": events,
    }
    if token:
        body["authorization_token"] = "tok_" + secrets.token_urlsafe(24)
    response = httpx.post(
        stack.base_url + "/api/v2/config/webhook", json=body, headers=tenant.headers, timeout=30
    )
    assert response.status_code == 201, response.text
    config: dict[str, Any] = response.json()
    tenant.configs[tenant.prefix + suffix] = config
    return config


def create_survey(base_url: str, tenant: Tenant) -> str:
    response = httpx.post(
        base_url + "/api/v2/surveys", json={"patient_id": "p"}, headers=tenant.headers, timeout=30
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def accepted(receiver: FaultReceiver, tenant: Tenant, survey_id: str) -> bool:
    """Whether the receiver accepted the `survey_created` event of `survey_id`."""
    return any(
        item.accepted
        and item.json()["event_type"] == "survey_created"
        and item.json()["content"]["id"] == survey_id
        for item in receiver.answered(tenant.prefix)
    )


@dataclass(frozen=True)
class ApiFailure:
    """One survey creation or completion that did not get the answer it expected."""

    at: float
    """`time.monotonic()` when it was sent."""
    method: str
    kind: str
    """The status ("503") or the httpx transport error ("ConnectError": refused,
    "RemoteProtocolError": dropped mid-request, "ReadTimeout": no answer in time)."""
    elapsed_s: float
    body: str
    """The response body, "" when there was no response."""


@dataclass(frozen=True)
class Allowance:
    """How many API calls a scenario lets fail, and which kinds of failure (see
    `ApiFailure.kind`); the default is none at all."""

    at_most: int = 0
    kinds: frozenset[str] = frozenset()


class Traffic:
    """Creates `surveys` surveys at `rate_per_s` over `lanes` concurrent connections and
    completes every other one, so that `survey_created` and `survey_finished` events flow
    steadily. A failed request is recorded in `failures` and skipped (the service may be
    down on purpose); the database, not this object, says which events exist, and
    `created` and `completed` say which ones the API confirmed."""

    def __init__(
        self,
        base_url: str,
        tenant: Tenant,
        *,
        surveys: int,
        rate_per_s: float,
        lanes: int = 1,
        timeout_s: float = 15,
    ) -> None:
        self.base_url = base_url
        self.tenant = tenant
        self.surveys = surveys
        self.rate_per_s = rate_per_s
        self.timeout_s = timeout_s
        self.created: list[str] = []
        self.completed: list[str] = []
        self.failures: list[ApiFailure] = []
        self.last_event_at = 0.0
        self.in_flight = 0
        """Requests sent and not answered yet."""
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._lane, args=(lane, lanes), name=f"traffic{lane}")
            for lane in range(lanes)
        ]
        self._start = 0.0

    @property
    def failed_requests(self) -> int:
        return len(self.failures)

    def failure_kinds(self) -> Counter[str]:
        return Counter(failure.kind for failure in self.failures)

    def start(self) -> None:
        self._start = time.monotonic()
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def is_alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _lane(self, lane: int, lanes: int) -> None:
        try:
            self._run(lane, lanes)
        except BaseException as exc:  # surfaced by finish()
            self.errors.append(exc)

    def _run(self, lane: int, lanes: int) -> None:
        created: list[str] = []
        tried: set[str] = set()
        with httpx.Client(
            base_url=self.base_url, headers=self.tenant.headers, timeout=self.timeout_s
        ) as api:
            for number in range(lane, self.surveys, lanes):
                time.sleep(max(0.0, self._start + number / self.rate_per_s - time.monotonic()))
                survey_id = self._send(api, "POST", "/api/v2/surveys", {"patient_id": "p"}, 201)
                if survey_id is not None:
                    created.append(survey_id)
                    self.created.append(survey_id)
                # Each survey is completed at most once: after a failed creation the one
                # before the last may be the one completed last time.
                if number % 2 == 1 and len(created) >= 2 and created[-2] not in tried:
                    target = created[-2]
                    tried.add(target)
                    if self._send(api, "PATCH", f"/api/v2/surveys/{target}", _DONE, 200):
                        self.completed.append(target)

    def _send(
        self, api: httpx.Client, method: str, path: str, body: dict[str, Any], expected: int
    ) -> str | None:
        sent = time.monotonic()
        with self._lock:
            self.in_flight += 1
        try:
            response = api.request(method, path, json=body)
        except httpx.TransportError as exc:
            kind = type(exc).__name__
            self.failures.append(ApiFailure(sent, method, kind, time.monotonic() - sent, ""))
            response = None
        finally:
            with self._lock:
                self.in_flight -= 1
        if response is None:
            time.sleep(0.05)  # the service is down: do not spin
            return None
        self.last_event_at = time.monotonic()
        if response.status_code != expected:
            elapsed_s = self.last_event_at - sent
            kind = str(response.status_code)
            self.failures.append(ApiFailure(sent, method, kind, elapsed_s, response.text))
            return None
        return str(response.json()["id"])

    def wait_created(self, count: int, *, timeout_s: float = 60) -> None:
        wait_for(
            lambda: len(self.created) >= count or not self.is_alive(),
            timeout_s=timeout_s,
            what=f"{count} surveys created",
        )

    def finish(self, *, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not self.is_alive(), "the traffic threads did not finish"
        if self.errors:
            raise self.errors[0]


def is_error_envelope(body: str) -> bool:
    """Whether `body` is SPEC 4's `{"error": {"code": str, "message": str, ...}}`."""
    try:
        error = json.loads(body)["error"]
        return isinstance(error["code"], str) and isinstance(error["message"], str)
    except (ValueError, KeyError, TypeError):
        return False


def api_problems(traffic: Traffic, allowance: Allowance) -> list[str]:
    """What the API did that `allowance` does not allow: too many failures, failures of
    another kind, or an error answered without SPEC 4's JSON envelope."""
    kinds = traffic.failure_kinds()
    problems = []
    if traffic.failed_requests > allowance.at_most:
        problems.append(
            f"{traffic.failed_requests} API calls failed, at most {allowance.at_most} allowed: "
            f"{dict(kinds)}"
        )
    for kind in sorted(set(kinds) - allowance.kinds):
        first = next(failure for failure in traffic.failures if failure.kind == kind)
        problems.append(
            f"API answered {kind} {kinds[kind]} times (allowed: {sorted(allowance.kinds)}); "
            f"first: {first.method} after {first.elapsed_s:.1f} s, body {first.body[:300]!r}"
        )
    for failure in traffic.failures:
        if failure.body and not is_error_envelope(failure.body):
            problems.append(
                f"a {failure.kind} without the JSON error envelope: {failure.body[:300]!r}"
            )
            break
    return problems


def undelivered(
    receiver: FaultReceiver,
    tenant: Tenant,
    *,
    created: list[str],
    completed: list[str],
    paths: set[str] | None = None,
) -> list[tuple[str, str, str]]:
    """(path, event type, survey id) that the API confirmed (201 for `created`, 200 for
    `completed`) and that the receiver never accepted at a configuration subscribed to
    it; only at `paths` if given."""
    got = {
        (item.path, item.json()["event_type"], item.json()["content"]["id"])
        for item in receiver.answered(tenant.prefix)
        if item.accepted
    }
    events = [("survey_created", survey_id) for survey_id in created]
    events += [("survey_finished", survey_id) for survey_id in completed]
    return [
        (path, event_type, survey_id)
        for path, config in tenant.configs.items()
        if paths is None or path in paths
        for event_type, survey_id in events
        if event_type in config["subscribed_events"] and (path, event_type, survey_id) not in got
    ]


_DONE = {"status": "completed"}


@dataclass(frozen=True)
class Sample:
    """One answer of a `Prober`: the status (0 for none) or the transport error."""

    at: float
    """`time.monotonic()` when it was sent."""
    status: int
    error: str
    elapsed_s: float
    body: str


class Prober(threading.Thread):
    """GETs `url` every `interval_s` until stopped, and keeps every answer."""

    def __init__(self, url: str, *, interval_s: float = 0.2, timeout_s: float = 5) -> None:
        super().__init__(name="prober", daemon=True)
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.samples: list[Sample] = []
        self._done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._done.is_set():
                sent = time.monotonic()
                try:
                    response = client.get(self.url)
                except httpx.TransportError as exc:
                    elapsed_s = time.monotonic() - sent
                    self.samples.append(Sample(sent, 0, type(exc).__name__, elapsed_s, ""))
                else:
                    elapsed_s = time.monotonic() - sent
                    status, body = response.status_code, response.text
                    self.samples.append(Sample(sent, status, "", elapsed_s, body))
                self._done.wait(self.interval_s)

    def between(self, start: float, end: float) -> list[Sample]:
        return [sample for sample in self.samples if start <= sample.at <= end]

    def finish(self) -> None:
        self._done.set()
        self.join(timeout=self.timeout_s + 5)


# -- the database, read-only --------------------------------------------------------


@dataclass(frozen=True)
class DeliveryRow:
    id: str
    pair: Pair
    status: str
    leased: bool
    attempts: int


@dataclass(frozen=True)
class TenantState:
    expected: set[Pair]
    deliveries: list[DeliveryRow]
    undispatched: int
    survey_ids: dict[str, set[str]]
    """Survey ids with an event, by event type."""

    def statuses(self) -> Counter[str]:
        return Counter(row.status for row in self.deliveries)

    def settled(self) -> bool:
        """Fanned out, and every delivery delivered with no live lease."""
        return (
            self.undispatched == 0
            and {row.pair for row in self.deliveries} == self.expected
            and len(self.deliveries) == len(self.expected)
            and all(row.status == "delivered" and not row.leased for row in self.deliveries)
        )


class Audit:
    """Direct, read-only queries on the service's database from the test process."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._loop = asyncio.new_event_loop()
        self._db: Database = open_database(database_url, pool_size=2)
        self._loop.run_until_complete(self._db.connect())

    def close(self) -> None:
        self._loop.run_until_complete(self._db.disconnect())
        self._loop.close()

    def reconnect(self) -> None:
        """A new pool, after the database server was restarted under the old one (whose
        connections are gone: closing it may fail, which does not matter here)."""
        with contextlib.suppress(Exception):  # the old pool's connections are dead
            self._loop.run_until_complete(self._db.disconnect())
        self._db = open_database(self._url, pool_size=2)
        self._loop.run_until_complete(self._db.connect())

    def rows(self, query: sa.ClauseElement) -> list[dict[str, Any]]:
        return [
            record_dict(row) for row in self._loop.run_until_complete(self._db.fetch_all(query))
        ]

    def tenant(self, client_id: str) -> TenantState:
        now = datetime.now(UTC)
        events = self.rows(
            sa.select(
                outbox.c.event_id, outbox.c.event_type, outbox.c.content, outbox.c.dispatched_at
            ).where(outbox.c.client_id == client_id)
        )
        configs = self.rows(
            sa.select(webhook_configs.c.id, webhook_configs.c.subscribed_events).where(
                webhook_configs.c.client_id == client_id
            )
        )
        found = self.rows(sa.select(deliveries).where(deliveries.c.client_id == client_id))
        by_event = {event["event_id"]: event for event in events}
        survey_ids: dict[str, set[str]] = {}
        for event in events:
            survey_ids.setdefault(event["event_type"], set()).add(event["content"]["id"])
        return TenantState(
            expected={
                (config["id"], event["event_type"], event["content"]["id"])
                for event in events
                for config in configs
                if event["event_type"] in config["subscribed_events"]
            },
            deliveries=[
                DeliveryRow(
                    id=row["id"],
                    pair=(
                        row["config_id"],
                        row["event_type"],
                        by_event[row["event_id"]]["content"]["id"],
                    ),
                    status=row["status"],
                    leased=row["lease_expires_at"] is not None and row["lease_expires_at"] > now,
                    attempts=row["attempt_count"],
                )
                for row in found
            ],
            undispatched=sum(1 for event in events if event["dispatched_at"] is None),
            survey_ids=survey_ids,
        )

    def fan_out(self, client_id: str) -> tuple[int, int]:
        """(fanned out, not yet): how many of the client's events a poller has dispatched
        (committed), and how many wait for one."""
        [row] = self.rows(
            sa.select(
                sa.func.count(outbox.c.dispatched_at).label("dispatched"),
                sa.func.count().label("events"),
            ).where(outbox.c.client_id == client_id)
        )
        return int(row["dispatched"]), int(row["events"] - row["dispatched"])

    def half_written(self, client_id: str) -> list[str]:
        """SPEC 7's one transaction, checked: each survey has exactly one
        `survey_created` event, a completed one exactly one `survey_finished` event, and
        every event has its survey (in the state it announces). What is wrong, if any."""
        rows = self.rows(
            sa.select(surveys.c.id, surveys.c.status).where(surveys.c.client_id == client_id)
        )
        status = {row["id"]: row["status"] for row in rows}
        events = self.rows(
            sa.select(outbox.c.event_type, outbox.c.content).where(outbox.c.client_id == client_id)
        )
        created = Counter(e["content"]["id"] for e in events if e["event_type"] == "survey_created")
        finished = Counter(
            e["content"]["id"] for e in events if e["event_type"] == "survey_finished"
        )
        completed = {survey_id for survey_id, value in status.items() if value == "completed"}
        checks = {
            "surveys without their survey_created event": set(status) - set(created),
            "survey_created events without their survey": set(created) - set(status),
            "surveys with two survey_created events": {k for k, n in created.items() if n > 1},
            "completed surveys without their survey_finished event": completed - set(finished),
            "survey_finished events of a survey not completed": set(finished) - completed,
            "surveys with two survey_finished events": {k for k, n in finished.items() if n > 1},
        }
        return [f"{len(ids)} {what}: {sorted(ids)[:3]}" for what, ids in checks.items() if ids]

    def repeated_pairs(self) -> list[dict[str, Any]]:
        """(event, configuration) pairs with more than one delivery, in the whole database."""
        count = sa.func.count().label("deliveries")
        return self.rows(
            sa.select(deliveries.c.event_id, deliveries.c.config_id, count)
            .group_by(deliveries.c.event_id, deliveries.c.config_id)
            .having(count > 1)
        )


# -- what the receiver saw -----------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    requests: int
    accepted_pairs: dict[Pair, set[str]]
    """Webhook ids accepted (2xx in time) for each pair."""
    duplicates: int
    """Requests accepted minus distinct webhook ids accepted."""
    refused: int
    """Requests answered 503 or held past the timeout."""
    wrong_token: int


def seen(receiver: FaultReceiver, tenant: Tenant) -> Seen:
    items = receiver.answered(tenant.prefix)
    accepted = [item for item in items if item.accepted]
    pairs: dict[Pair, set[str]] = {}
    wrong_token = 0
    for item in accepted:
        config = tenant.configs[item.path]
        body = item.json()
        pair = (config["id"], body["event_type"], body["content"]["id"])
        pairs.setdefault(pair, set()).add(item.webhook_id)
        if item.headers.get("x-webhook-infermedica-token") != config["authorization_token"]:
            wrong_token += 1
    return Seen(
        requests=len(items),
        accepted_pairs=pairs,
        duplicates=len(accepted) - len({item.webhook_id for item in accepted}),
        refused=len(items) - len(accepted),
        wrong_token=wrong_token,
    )


# -- the figures -----------------------------------------------------------------------


@dataclass
class Figures:
    fault: str
    events: int
    deliveries: int
    requests: int
    lost: int
    duplicates: int
    refused: int
    swept: int
    api_errors: int
    """Survey creations and completions that the API refused or did not answer."""
    converge_s: float | None
    """From the end of the fault to every delivery delivered; None if it never did."""
    after_last_event_s: float | None
    note: str = ""
    api_allowed: int = 0
    api_error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def api_errors_cell(self) -> str:
        """ "12 of <=40 (ConnectError 10, 503 2)": failures, the scenario's bound, kinds."""
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.api_error_kinds.items()))
        return f"{self.api_errors} of <={self.api_allowed}" + (f" ({kinds})" if kinds else "")


COLUMNS = (
    ("fault", "fault"),
    ("events", "events"),
    ("deliveries", "deliveries"),
    ("requests", "requests"),
    ("lost", "lost"),
    ("duplicates", "duplicates"),
    ("refused", "503/timeout"),
    ("swept", "swept"),
    ("api_errors_cell", "API errors"),
    ("converge_s", "converge s (fault end)"),
    ("after_last_event_s", "converge s (last event)"),
    ("note", "note"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "never"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def table(rows: list[Figures]) -> str:
    cells = [[_cell(getattr(row, key)) for key, _ in COLUMNS] for row in rows]
    heads = [head for _, head in COLUMNS]
    widths = [max([len(head), *(len(line[i]) for line in cells)]) for i, head in enumerate(heads)]
    lines = [heads, ["-" * width for width in widths], *cells]
    return "\n".join(
        " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    )


@dataclass
class Report:
    path: Path
    rows: list[Figures] = field(default_factory=list)

    def add(self, row: Figures) -> None:
        self.rows.append(row)
        self.path.write_text(table(self.rows) + "\n")
        print(f"\n{table([row])}\n(all figures: {self.path})")


# -- convergence ---------------------------------------------------------------------


@dataclass
class Outcome:
    state: TenantState
    seen: Seen
    converged_at: float | None

    @property
    def lost(self) -> set[Pair]:
        return self.state.expected - set(self.seen.accepted_pairs)


def converge(
    view: Audit,
    receiver: FaultReceiver,
    tenant: Tenant,
    *,
    timeout_s: float,
    check: Callable[[], None],
    poll_s: float = 0.25,
) -> Outcome:
    """Wait until the tenant's deliveries are all delivered and every expected pair was
    accepted by the receiver; the outcome as it stands at that moment or at `timeout_s`.
    `check` runs on every round (to fail at once if a process died, say)."""
    deadline = time.monotonic() + timeout_s
    while True:
        check()
        state = view.tenant(tenant.client_id)
        now = time.monotonic()
        saw = seen(receiver, tenant)
        if state.settled() and state.expected <= set(saw.accepted_pairs):
            return Outcome(state, saw, now)
        if now > deadline:
            return Outcome(state, saw, None)
        time.sleep(poll_s)


def figures(
    fault: str,
    outcome: Outcome,
    *,
    fault_ended_at: float,
    last_event_at: float,
    swept: int,
    traffic: Traffic,
    allowance: Allowance,
    note: str = "",
) -> Figures:
    done = outcome.converged_at
    return Figures(
        fault=fault,
        events=sum(len(ids) for ids in outcome.state.survey_ids.values()),
        deliveries=len(outcome.state.expected),
        requests=outcome.seen.requests,
        lost=len(outcome.lost),
        duplicates=outcome.seen.duplicates,
        refused=outcome.seen.refused,
        swept=swept,
        api_errors=traffic.failed_requests,
        api_allowed=allowance.at_most,
        api_error_kinds=dict(traffic.failure_kinds()),
        converge_s=None if done is None else max(0.0, done - fault_ended_at),
        after_last_event_s=None if done is None else max(0.0, done - last_event_at),
        note=note,
    )


def explain(outcome: Outcome, limit: int = 10) -> str:
    """Why a tenant did not converge: states, and the first lost pairs with their rows."""
    rows = {row.pair: row for row in outcome.state.deliveries}
    lost = sorted(outcome.lost)[:limit]
    detail = "\n".join(f"  {pair}: {rows.get(pair)}" for pair in lost)
    missing_rows = len(outcome.state.expected - set(rows))
    return (
        f"statuses {dict(outcome.state.statuses())}, undispatched events "
        f"{outcome.state.undispatched}, expected pairs without a delivery row {missing_rows}, "
        f"lost {len(outcome.lost)}; first lost:\n{detail}"
    )


Inject = Callable[[], str]
"""Injects a fault and returns when it is over, with a note for the figures."""
