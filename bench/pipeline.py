"""The pipeline's phases, measured from outside as a user sees them: surveys created
through the API, deliveries counted at the receiver.

- `saturate`: surveys created as fast as a few client tasks can, until every delivery
  has arrived (or the deadline passed): the throughput.
- `paced`: surveys created open-loop at a fixed rate (half the saturated one): the
  latency a user sees under load.
- `idle`: one survey at a time, with pauses: the latency of a quiet system.
- `endpoint_rates`: `GET /config/webhook/{id}` and `PATCH /surveys/{id}` (completion,
  whose transaction writes the outbox) alternately, at the same concurrency.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.api import Api, Created, Receipt, ReceiverClient
from bench.progress import Progress
from bench.stats import Percentiles, percentiles

PROGRESS_INTERVAL_S = 0.25
DRAIN_MIN_DELIVERIES = 50
SUBSCRIBED = ["survey_created"]

Check = Callable[[], None]
"""Raises if a process of the service died; called while waiting."""


@dataclass(frozen=True)
class Run:
    """The surveys one phase created and the deliveries the receiver got for them."""

    created: list[Created]
    receipts: list[Receipt]
    expected: int
    repeated: int

    @property
    def received(self) -> int:
        return len(self.receipts)

    @property
    def complete(self) -> bool:
        return self.received >= self.expected

    @property
    def duplicates(self) -> int:
        return self.repeated

    @property
    def window_s(self) -> float:
        """From the first creation request to the last receipt."""
        if not self.created or not self.receipts:
            return 0.0
        return max(r.at_s for r in self.receipts) - min(c.sent_s for c in self.created)

    @property
    def deliveries_per_s(self) -> float:
        return self.received / self.window_s if self.window_s > 0 else 0.0

    @property
    def drain_per_s(self) -> float | None:
        """Deliveries per second after the last creation was answered, if a backlog of at
        least `DRAIN_MIN_DELIVERIES` remained: the delivery side alone, with the API no
        longer competing for the CPUs."""
        if not self.created:
            return None
        last_created = max(c.acked_s for c in self.created)
        after = [r.at_s for r in self.receipts if r.at_s > last_created]
        if len(after) < DRAIN_MIN_DELIVERIES:
            return None
        return len(after) / (max(after) - last_created)

    @property
    def creations_per_s(self) -> float:
        if not self.created:
            return 0.0
        span = max(c.acked_s for c in self.created) - min(c.sent_s for c in self.created)
        return len(self.created) / span if span > 0 else 0.0

    def latency_ms(self, *, since_ack: bool = False) -> Percentiles:
        """Commit-to-receipt: from the API's `created_at`, or from the client's 201."""
        by_survey = {c.survey_id: c for c in self.created}
        samples = []
        for receipt in self.receipts:
            survey = by_survey[receipt.survey_id] if receipt.survey_id else None
            if survey is not None:
                start = survey.acked_s if since_ack else survey.created_at_s
                samples.append((receipt.at_s - start) * 1000)
        return percentiles(samples)


async def create_configs(
    api: Api, receiver_url: str, *, fanout: int, controls: dict[str, Any] | None = None
) -> list[str]:
    """`fanout` configurations subscribed to `survey_created`, each its own receiver path,
    with the delivery `controls` (SPEC 13) given."""
    return [
        await api.create_config(f"{receiver_url}/hook/{number}", SUBSCRIBED, controls=controls)
        for number in range(fanout)
    ]


async def _collect(receiver: ReceiverClient, created: list[Created], *, expected: int) -> Run:
    ours = {c.survey_id for c in created}
    receipts = [r for r in await receiver.dump() if r.survey_id in ours]
    return Run(created, receipts, expected, await receiver.repeated())


async def _wait_for_deliveries(
    receiver: ReceiverClient,
    *,
    expected: int,
    deadline: float,
    check: Check,
    progress: Progress,
    label: str,
) -> None:
    while True:
        received = await receiver.distinct()
        progress.show(label, f"delivered {received}/{expected}")
        if received >= expected or time.monotonic() > deadline:
            return
        check()
        await asyncio.sleep(PROGRESS_INTERVAL_S)


async def saturate(
    api: Api,
    receiver: ReceiverClient,
    *,
    surveys: int,
    fanout: int,
    concurrency: int,
    drain_timeout_s: float,
    check: Check,
    progress: Progress,
    label: str = "pipeline",
) -> Run:
    """Create `surveys` surveys from `concurrency` tasks as fast as the API answers, then
    wait (up to `drain_timeout_s` after the last one) for their deliveries."""
    await receiver.reset()
    expected = surveys * fanout
    created: list[Created] = []
    numbers = iter(range(surveys))

    async def creator() -> None:
        for number in numbers:
            created.append(await api.create_survey(f"patient-{number:06d}"))

    async def monitor() -> None:
        while True:
            received = await receiver.distinct()
            detail = f"created {len(created)}/{surveys}  delivered {received}/{expected}"
            progress.show(label, detail)
            check()
            await asyncio.sleep(PROGRESS_INTERVAL_S)

    watcher = asyncio.create_task(monitor())
    try:
        await asyncio.gather(*(creator() for _ in range(concurrency)))
    finally:
        watcher.cancel()
    await _wait_for_deliveries(
        receiver,
        expected=expected,
        deadline=time.monotonic() + drain_timeout_s,
        check=check,
        progress=progress,
        label=label,
    )
    return await _collect(receiver, created, expected=expected)


async def paced(
    api: Api,
    receiver: ReceiverClient,
    *,
    surveys_per_s: float,
    duration_s: float,
    fanout: int,
    drain_timeout_s: float,
    check: Check,
    progress: Progress,
    label: str = "paced",
) -> Run:
    """Create surveys open-loop at `surveys_per_s` for `duration_s`: each request starts
    on schedule whether or not the previous ones were answered."""
    await receiver.reset()
    count = max(1, round(surveys_per_s * duration_s))
    created: list[Created] = []
    tasks: list[asyncio.Task[None]] = []

    async def create(number: int) -> None:
        created.append(await api.create_survey(f"paced-{number:06d}"))

    started = time.monotonic()
    for number in range(count):
        delay = started + number / surveys_per_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(create(number)))
        if number % 20 == 0:
            progress.show(label, f"{surveys_per_s:.0f} surveys/s, created {number}/{count}")
            check()
    await asyncio.gather(*tasks)
    await _wait_for_deliveries(
        receiver,
        expected=count * fanout,
        deadline=time.monotonic() + drain_timeout_s,
        check=check,
        progress=progress,
        label=label,
    )
    return await _collect(receiver, created, expected=count * fanout)


async def idle(
    api: Api,
    receiver: ReceiverClient,
    *,
    surveys: int,
    fanout: int,
    pause_s: float,
    timeout_s: float,
    check: Check,
    progress: Progress,
) -> Run:
    """One survey at a time: create, wait for its deliveries, pause, repeat."""
    await receiver.reset()
    created: list[Created] = []
    for number in range(surveys):
        progress.show("idle", f"survey {number + 1}/{surveys}")
        created.append(await api.create_survey(f"idle-{number:06d}"))
        deadline = time.monotonic() + timeout_s
        while await receiver.distinct() < (number + 1) * fanout:
            if time.monotonic() > deadline:
                break
            check()
            await asyncio.sleep(0.005)
        await asyncio.sleep(pause_s)
    return await _collect(receiver, created, expected=surveys * fanout)


async def create_surveys(api: Api, *, count: int, concurrency: int, prefix: str) -> list[str]:
    """Surveys to complete later, created as fast as the API answers."""
    created: list[str] = []
    numbers = iter(range(count))

    async def creator() -> None:
        for number in numbers:
            created.append((await api.create_survey(f"{prefix}-{number:06d}")).survey_id)

    await asyncio.gather(*(creator() for _ in range(concurrency)))
    return created


async def _timed(calls: Iterable[Callable[[], Awaitable[None]]], *, concurrency: int) -> float:
    """Run `calls` from `concurrency` tasks; the seconds it took."""
    pending = iter(calls)

    async def runner() -> None:
        for call in pending:
            await call()

    started = time.monotonic()
    await asyncio.gather(*(runner() for _ in range(concurrency)))
    return time.monotonic() - started


CpuSample = Callable[[], dict[str, float | None]]
"""CPU seconds used so far, by process name."""


@dataclass(frozen=True)
class EndpointRates:
    get_config_per_s: float
    completions_per_s: float
    requests: int
    cpu_ms_per_get: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_patch: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.completions_per_s / self.get_config_per_s if self.get_config_per_s else 0.0


async def endpoint_rates(
    reader: Api,
    config_id: str,
    completer: Api,
    survey_ids: list[str],
    *,
    concurrency: int,
    rounds: int,
    progress: Progress,
    cpu: CpuSample | None = None,
) -> EndpointRates:
    """As many GETs of one configuration as completions of `survey_ids`, in alternating
    slices, so that noise from elsewhere on the machine hits both alike. With `cpu`, also
    the CPU each process spent per request of each kind."""
    get_s = patch_s = 0.0
    get_cpu: defaultdict[str, float] = defaultdict(float)
    patch_cpu: defaultdict[str, float] = defaultdict(float)
    size = max(1, -(-len(survey_ids) // rounds))
    chunks = [survey_ids[start : start + size] for start in range(0, len(survey_ids), size)]
    for number, chunk in enumerate(chunks, start=1):
        progress.show("GET vs PATCH", f"round {number}/{rounds}")
        gets = [lambda: reader.get_config(config_id)] * len(chunk)
        with _cpu_into(get_cpu, cpu):
            get_s += await _timed(gets, concurrency=concurrency)
        patches = [_completion(completer, survey_id) for survey_id in chunk]
        with _cpu_into(patch_cpu, cpu):
            patch_s += await _timed(patches, concurrency=concurrency)
    count = len(survey_ids)
    return EndpointRates(
        get_config_per_s=count / get_s if get_s else 0.0,
        completions_per_s=count / patch_s if patch_s else 0.0,
        requests=count,
        cpu_ms_per_get={name: s / count * 1000 for name, s in get_cpu.items()},
        cpu_ms_per_patch={name: s / count * 1000 for name, s in patch_cpu.items()},
    )


@contextmanager
def _cpu_into(total: defaultdict[str, float], cpu: CpuSample | None) -> Iterator[None]:
    before = cpu() if cpu else {}
    yield
    for name, value in (cpu() if cpu else {}).items():
        start = before.get(name)
        if value is not None and start is not None:
            total[name] += value - start


def _completion(api: Api, survey_id: str) -> Callable[[], Awaitable[None]]:
    return lambda: api.complete_survey(survey_id)
