"""Delivery attempts, a batch at a time: claim, sign, POST, record, decide what next.

A batch costs a fixed few database statements (claim, read the configurations, record
the attempts and states in one transaction), and its POSTs run concurrently.

`Deliverer` is plain async code with its collaborators passed in (`Deliverer`), so tests
can drive it with `httpx.MockTransport` or a real receiver; `workers.actor` wraps it
in a Dramatiq actor.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from core import lifecycle
from core.clock import utcnow
from core.controls import WaitingReason
from core.database import Database
from core.lifecycle import AttemptRecord, Claim, Health, Result, Status
from core.metrics import ATTEMPT_DURATION, DELIVERIES, WAITING
from core.settings import Settings
from core.tracing import inject, parent_context, tracer
from workers.backoff import next_delay_ms
from workers.capacity import Capacity, Held
from workers.errors import DeliveryError, TargetBlocked
from workers.lanes import MIN_TURN_S, Lanes
from workers.limits import Limiter, Limits, LocalLimiter, Refused
from workers.signing import webhook_headers
from workers.transport import Reply, send

logger = logging.getLogger("webhooks.worker")

# The longest a delivery waits in the worker for a place in its endpoint's lane before
# it is released for a later turn: a quick endpoint's queue clears well within it.
LANE_MAX_WAIT_S = 0.25
# Each attempt's client span (SPEC 17): a child of its event's trace context.
ATTEMPT_SPAN = "webhook POST"


@dataclass(frozen=True)
class Outcome:
    """What became of a delivery after this attempt; `retry_in_ms` when it is pending.
    `deferred`: it was not attempted, its endpoint's lane being full (`workers.lanes`),
    and is due again in `retry_in_ms`, with no attempt charged."""

    status: Status | None
    retry_in_ms: int | None = None
    error: DeliveryError | None = None
    deferred: bool = False


@dataclass(frozen=True)
class Wait:
    """An attempt that did not start: why (None: the endpoint's lane was full) and in how
    many seconds to come back."""

    reason: WaitingReason | None
    turn_s: float


# When an attempt started, its reply or error, and how long it took.
_Sent = tuple[datetime, "Reply | None", "DeliveryError | None", int]


@dataclass
class Deliverer:
    """Attempts deliveries, POSTing through `http` (`workers.transport.create_transport`,
    or an `httpx.MockTransport` in tests). `limiter`: where `rate_limit_per_s` and
    `max_in_flight` are counted (default: this process alone, as `webhooks serve` needs)."""

    db: Database
    http: httpx.AsyncBaseTransport
    settings: Settings
    limiter: Limiter = field(default_factory=LocalLimiter)
    capacity: Capacity = field(init=False)
    lanes: Lanes = field(init=False)

    def __post_init__(self) -> None:
        self.capacity = Capacity(self.settings.worker_concurrency)
        self.lanes = Lanes(width=self.settings.endpoint_concurrency, max_wait_s=LANE_MAX_WAIT_S)

    async def deliver(self, delivery_id: str) -> Outcome:
        """`deliver_many` of one delivery."""
        return (await self.deliver_many([delivery_id]))[delivery_id]

    async def deliver_many(self, delivery_ids: Sequence[str]) -> dict[str, Outcome]:
        """Attempt each delivery that is pending, due and not leased by another worker,
        all at once (in slices of at most the worker's concurrency), and record the
        attempts together; an outcome for every id."""
        ids = list(dict.fromkeys(delivery_ids))
        outcomes: dict[str, Outcome] = {}
        for start in range(0, len(ids), self.capacity.slots):
            outcomes |= await self._deliver_slice(ids[start : start + self.capacity.slots])
        return outcomes

    async def _deliver_slice(self, delivery_ids: list[str]) -> dict[str, Outcome]:
        outcomes = {delivery_id: Outcome(None) for delivery_id in delivery_ids}
        async with self.capacity.hold(len(delivery_ids)) as held:
            claims = await lifecycle.claim(
                self.db, delivery_ids, lease_s=self.settings.delivery_lease_s
            )
            await self._count_waiting_in_order(delivery_ids, claims)
            usable = []
            for claim in claims:
                parked = await self._park(claim)
                if parked is None:
                    usable.append(claim)
                else:
                    outcomes[claim.delivery_id] = Outcome(parked)
            await held.give(len(delivery_ids) - len(usable))
            attempts = await asyncio.gather(*(self._attempt(claim, held) for claim in usable))
        results = [attempt for attempt in attempts if not isinstance(attempt, Wait)]
        outcomes |= await self._defer(
            [
                (claim, wait)
                for claim, wait in zip(usable, attempts, strict=True)
                if isinstance(wait, Wait)
            ]
        )
        if results:
            await lifecycle.record(
                self.db,
                [result for result, _ in results],
                disable_after_s=self.settings.disable_after_s,
            )
        _observe(results)
        for result, outcome in results:
            outcomes[result.claim.delivery_id] = outcome
        return outcomes | await self._next_in_order([result for result, _ in results])

    async def _count_waiting_in_order(self, delivery_ids: list[str], claims: list[Claim]) -> None:
        """Mark the ids left out of the claim that wait behind their fifo configuration's
        head; they get no message of their own (`next_in_order` hands over)."""
        claimed = {claim.delivery_id for claim in claims}
        left_out = [delivery_id for delivery_id in delivery_ids if delivery_id not in claimed]
        if left_out:
            due_by = utcnow() + lifecycle.EARLY_ARRIVAL_SLACK
            waiting = await lifecycle.mark_waiting_in_order(self.db, left_out, due_by=due_by)
            WAITING.labels(reason=WaitingReason.ORDERING).inc(len(waiting))

    async def _next_in_order(self, results: list[Result]) -> dict[str, Outcome]:
        """The next head of each fifo configuration whose head just became final, to be
        sent now."""
        config_ids = [
            result.claim.config_id
            for result in results
            if result.claim.fifo and result.status in (Status.DELIVERED, Status.FAILED)
        ]
        if not config_ids:
            return {}
        heads = await lifecycle.next_in_order(self.db, config_ids)
        return {head: Outcome(Status.PENDING, retry_in_ms=0, deferred=True) for head in heads}

    async def _defer(self, waits: list[tuple[Claim, Wait]]) -> dict[str, Outcome]:
        """Release deliveries that were turned away (a full lane, a limit), each due at
        its turn, with why it waits."""
        if not waits:
            return {}
        now = utcnow()
        await lifecycle.release(
            self.db,
            [(claim, now + timedelta(seconds=wait.turn_s)) for claim, wait in waits],
            reasons={claim.delivery_id: wait.reason for claim, wait in waits if wait.reason},
        )
        for _, wait in waits:
            if wait.reason is not None:
                WAITING.labels(reason=wait.reason).inc()
        return {
            claim.delivery_id: Outcome(
                Status.PENDING, retry_in_ms=math.ceil(wait.turn_s * 1000), deferred=True
            )
            for claim, wait in waits
        }

    async def _park(self, claim: Claim) -> Status | None:
        if claim.deleted or not claim.enabled:
            return await lifecycle.park(self.db, claim)
        return None

    async def _attempt(self, claim: Claim, held: Held) -> tuple[Result, Outcome] | Wait:
        """POST within the endpoint's lane and the configuration's limits, or why not."""
        try:
            sent = await self._send_in_lane(claim)
        finally:
            await held.give()
        if isinstance(sent, Wait):
            return sent
        started_at, reply, error, duration_ms = sent
        attempt = AttemptRecord(
            started_at=started_at,
            duration_ms=duration_ms,
            status_code=reply.status_code if reply else None,
            error=error.code if error else (None if _ok(reply) else "http_status"),
            response_body=reply.body if reply else None,
        )
        outcome = self._decide(claim, reply, error)
        retry_in_ms = outcome.retry_in_ms
        result = Result(
            claim=claim,
            attempt=attempt,
            status=outcome.status or Status.PENDING,
            next_attempt_at=None
            if retry_in_ms is None
            else started_at + timedelta(milliseconds=retry_in_ms),
            health=_health(reply),
        )
        return result, outcome

    async def _send_in_lane(self, claim: Claim) -> _Sent | Wait:
        entered = await self.lanes.enter(claim.config_id)
        if entered is None:
            return Wait(None, self.lanes.book_turn_s(claim.config_id))
        try:
            limits = self._limits(claim)
            permit = None if limits is None else await self.limiter.acquire(claim.config_id, limits)
            if isinstance(permit, Refused):
                return Wait(permit.reason, permit.retry_in_s)
            try:
                started_at = utcnow()
                return (started_at, *await self._post(claim))
            finally:
                if permit is not None:
                    await self.limiter.release(claim.config_id, permit)
        finally:
            self.lanes.leave(claim.config_id, entered)

    def _limits(self, claim: Claim) -> Limits | None:
        if claim.rate_limit_per_s is None and claim.max_in_flight is None:
            return None
        step_s = 1 / claim.rate_limit_per_s if claim.rate_limit_per_s else 0.0
        if claim.max_in_flight is not None:
            duration_s = self.lanes.duration_s(claim.config_id)
            step_s = max(step_s, duration_s / claim.max_in_flight, MIN_TURN_S)
        remaining_s = (claim.lease_expires_at - utcnow()).total_seconds()
        return Limits(
            rate_per_s=claim.rate_limit_per_s,
            max_in_flight=claim.max_in_flight,
            hold_s=max(remaining_s, 1.0),
            step_s=step_s,
        )

    async def _post(self, claim: Claim) -> tuple[Reply | None, DeliveryError | None, int]:
        """Sign and POST, in the attempt's span, whose context the request carries as
        `traceparent`; the reply or the error, and how long it took."""
        started = time.monotonic()
        body = claim.body.encode()
        # The configuration's extra headers cannot name one of ours (SPEC 13 refuses them).
        headers = claim.headers | webhook_headers(
            msg_id=claim.delivery_id, body=body, token=claim.token, secrets=claim.secrets
        )
        with _attempt_span(claim) as span:
            inject(headers, span)
            try:
                reply = await send(
                    self.http,
                    claim.url,
                    body=body,
                    headers=headers,
                    timeout_s=self.settings.request_timeout_s,
                    allow_private_targets=self.settings.allow_private_targets,
                )
            except DeliveryError as exc:
                _failed(span, exc.code)
                return None, exc, int((time.monotonic() - started) * 1000)
            span.set_attribute("http.response.status_code", reply.status_code)
            if not _ok(reply):
                _failed(span, str(reply.status_code))
        return reply, None, reply.duration_ms

    def _decide(self, claim: Claim, reply: Reply | None, error: DeliveryError | None) -> Outcome:
        if _ok(reply):
            return Outcome(Status.DELIVERED)
        if _health(reply) == Health.GONE:
            # The configuration is disabled: hold the delivery, re-enabling sends it.
            return Outcome(Status.HELD)
        if isinstance(error, TargetBlocked) or claim.attempt >= self.settings.max_attempts:
            return Outcome(Status.FAILED, error=error)
        delay_ms = next_delay_ms(
            claim.attempt,
            status_code=reply.status_code if reply else None,
            retry_after=reply.retry_after if reply else None,
            min_backoff_ms=self.settings.min_backoff_ms,
            max_backoff_ms=self.settings.max_backoff_ms,
            now=utcnow(),
        )
        return Outcome(Status.PENDING, retry_in_ms=delay_ms, error=error)


def _attempt_span(claim: Claim) -> trace.Span:
    """The attempt's client span, started as a child of the delivery's event's context
    (a new trace for a delivery that has none)."""
    return tracer().start_span(
        ATTEMPT_SPAN,
        context=parent_context(claim.traceparent),
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": "POST",
            "webhooks.config_id": claim.config_id,
            "webhooks.delivery_id": claim.delivery_id,
            "webhooks.event_id": claim.event_id,
            "webhooks.event_type": claim.event_type,
            "webhooks.attempt": claim.attempt,
        },
    )


def _failed(span: trace.Span, error_type: str) -> None:
    """Mark a failed attempt: `error.type` is our error code, or the status code of a
    non-2xx reply, as OpenTelemetry's HTTP conventions have it."""
    span.set_attribute("error.type", error_type)
    span.set_status(StatusCode.ERROR, error_type)


def _metric_outcome(outcome: Outcome) -> str:
    return "retry" if outcome.status in (None, Status.PENDING) else str(outcome.status)


def _health(reply: Reply | None) -> Health:
    if _ok(reply):
        return Health.OK
    return Health.GONE if reply is not None and reply.status_code == 410 else Health.FAILING


def _ok(reply: Reply | None) -> bool:
    return reply is not None and 200 <= reply.status_code < 300


def _observe(results: list[tuple[Result, Outcome]]) -> None:
    """Log each recorded attempt and time it; count the batch's outcomes, one counter
    update per outcome rather than per attempt (each takes a lock, and in multiprocess
    mode writes a file)."""
    counts: Counter[str] = Counter()
    for result, outcome in results:
        claim, attempt = result.claim, result.attempt
        logger.info(
            "attempt %d %s",
            claim.attempt,
            outcome.status,
            extra={
                "delivery_id": claim.delivery_id,
                "event_id": claim.event_id,
                "config_id": claim.config_id,
                "attempt": claim.attempt,
                "status_code": attempt.status_code,
            },
        )
        ATTEMPT_DURATION.observe(attempt.duration_ms / 1000)
        counts[_metric_outcome(outcome)] += 1
    for name, count in counts.items():
        DELIVERIES.labels(outcome=name).inc(count)
