"""The Dramatiq `deliver` actor: async, on the worker's event-loop thread, sharing one
database pool and one pooled HTTP client per process.

A message carries a batch of delivery ids (up to `BATCH_SIZE`), attempted together.
Pending after a failed attempt: a message of one delivery raises `Retry(delay=...)` with
the back-off curve; a batch sends each of its pending deliveries again in a message of
its own, delayed the same way, and so does a delivery deferred because its endpoint's
lane was full (`workers.lanes`) (the database holds the same due time, so a lost message
is recovered by the poller's sweep). A blocked target is permanent: it is recorded as
failed, and a message of one delivery raises `TargetBlocked`, which `throws=` makes final.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Middleware

from core.database import open_database
from core.outages import is_outage
from core.settings import get_settings
from workers.delivery import Deliverer
from workers.errors import PERMANENT, TargetBlocked
from workers.limits import create_limiter
from workers.transport import create_transport

ACTOR_NAME = "deliver"
QUEUE_NAME = "deliveries"
# Deliveries per message: enough to make the per-message and per-statement costs small,
# few enough that a burst still spreads over the worker's threads.
BATCH_SIZE = 16
MESSAGE_TIME_LIMIT_MS = 24 * 3600 * 1000
# How soon a message that met a database outage is tried again.
OUTAGE_RETRY_MS = 2000

logger = logging.getLogger("webhooks.worker")

_deliverer: Deliverer | None = None
# One lock per event loop: each Dramatiq worker started in a process runs its own loop.
_starting: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}


async def _process_deliverer() -> Deliverer:
    global _deliverer
    lock = _starting.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        if _deliverer is None:
            settings = get_settings()
            db = open_database(settings.database_url, pool_size=settings.worker_concurrency)
            await db.connect()
            http = create_transport(
                allow_private_targets=settings.allow_private_targets,
                max_connections=settings.worker_concurrency * 2,
            )
            limiter = create_limiter(settings.redis_url)
            _deliverer = Deliverer(db=db, http=http, settings=settings, limiter=limiter)
    return _deliverer


async def _close_deliverer() -> None:
    global _deliverer
    _starting.pop(asyncio.get_running_loop(), None)
    if _deliverer is not None:
        deliverer, _deliverer = _deliverer, None
        await deliverer.http.aclose()
        await deliverer.limiter.aclose()
        await deliverer.db.disconnect()


def delivery_message(delivery_ids: Sequence[str]) -> dramatiq.Message[None]:
    return dramatiq.Message(
        queue_name=QUEUE_NAME,
        actor_name=ACTOR_NAME,
        args=(list(delivery_ids),),
        kwargs={},
        options={},
    )


def _deliver_with(broker: dramatiq.Broker) -> Callable[[list[str]], Awaitable[None]]:
    async def deliver(delivery_ids: list[str]) -> None:
        """Attempt the deliveries; see the module docstring for what happens next."""
        try:
            outcomes = await (await _process_deliverer()).deliver_many(delivery_ids)
        except Exception as exc:
            if not is_outage(exc):
                raise
            # Without the database nothing was claimed or recorded: try again soon. (A
            # record lost after its POSTs leaves the lease to run out: sent again then.)
            logger.warning("database unavailable, deliveries retried: %s", type(exc).__name__)
            raise dramatiq.Retry(delay=OUTAGE_RETRY_MS) from exc
        if len(outcomes) == 1:
            [outcome] = outcomes.values()
            if isinstance(outcome.error, TargetBlocked):
                raise outcome.error
            # A deferral is not a failure: a new message, not one of Dramatiq's retries.
            if outcome.retry_in_ms is not None and not outcome.deferred:
                raise dramatiq.Retry(delay=outcome.retry_in_ms)
        retries = {id_: o.retry_in_ms for id_, o in outcomes.items() if o.retry_in_ms is not None}
        if retries:
            await asyncio.to_thread(_send_retries, broker, retries)

    return deliver


def _send_retries(broker: dramatiq.Broker, retries: dict[str, int]) -> None:
    for delivery_id, delay_ms in retries.items():
        broker.enqueue(delivery_message([delivery_id]), delay=delay_ms)


class CloseDeliverer(Middleware):
    """Closes the process's HTTP client and database pool once the worker threads have
    finished their deliveries, before the loop stops (Dramatiq runs `after_` hooks in
    reverse order, and this middleware is added after `AsyncIO`)."""

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            loop_thread.run_coroutine(_close_deliverer())


def declare_deliver(broker: dramatiq.Broker) -> dramatiq.Actor[[list[str]], None]:
    settings = get_settings()
    declare = dramatiq.actor(
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=QUEUE_NAME,
        # The database counts attempts; this only has to outlast them.
        max_retries=settings.max_attempts + 5,
        throws=PERMANENT,
        # Each POST has its own timeout, but a batch may first wait for capacity behind
        # slow endpoints; a time limit that struck after its POSTs would cancel their
        # record, and they would be sent again once their leases ran out.
        time_limit=MESSAGE_TIME_LIMIT_MS,
    )
    return declare(_deliver_with(broker))
