"""The Dramatiq `deliver` actor: async, on the worker's event-loop thread, sharing one
database pool and one pooled HTTP client per process.

Pending after a failed attempt: `Retry(delay=...)` with the back-off curve (the database
holds the same due time, so a lost message is recovered by the poller's sweep). A blocked
target is permanent: the actor raises `TargetBlocked`, which `throws=` makes final.
"""

from __future__ import annotations

import asyncio

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Middleware

from core.database import open_database
from core.settings import get_settings
from workers.delivery import Deliverer
from workers.errors import PERMANENT, TargetBlocked
from workers.store import Status
from workers.transport import create_client

ACTOR_NAME = "deliver"
QUEUE_NAME = "deliveries"

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
            http = create_client(
                timeout_s=settings.request_timeout_s,
                allow_private_targets=settings.allow_private_targets,
                max_connections=settings.worker_concurrency * 2,
            )
            _deliverer = Deliverer(db=db, http=http, settings=settings)
    return _deliverer


async def _close_deliverer() -> None:
    global _deliverer
    _starting.pop(asyncio.get_running_loop(), None)
    if _deliverer is not None:
        deliverer, _deliverer = _deliverer, None
        await deliverer.http.aclose()
        await deliverer.db.disconnect()


async def deliver(delivery_id: str) -> None:
    """Attempt one delivery; see the module docstring for what happens next."""
    outcome = await (await _process_deliverer()).deliver(delivery_id)
    if isinstance(outcome.error, TargetBlocked):
        raise outcome.error
    if outcome.status == Status.PENDING and outcome.retry_in_ms is not None:
        raise dramatiq.Retry(delay=outcome.retry_in_ms)


class CloseDeliverer(Middleware):
    """Closes the process's HTTP client and database pool once the worker threads have
    finished their deliveries, before the loop stops (Dramatiq runs `after_` hooks in
    reverse order, and this middleware is added after `AsyncIO`)."""

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            loop_thread.run_coroutine(_close_deliverer())


def declare_deliver(broker: dramatiq.Broker) -> dramatiq.Actor[[str], None]:
    settings = get_settings()
    declare = dramatiq.actor(
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=QUEUE_NAME,
        # The database counts attempts; this only has to outlast them.
        max_retries=settings.max_attempts + 5,
        throws=PERMANENT,
        time_limit=int((settings.request_timeout_s + 60) * 1000),
    )
    return declare(deliver)
