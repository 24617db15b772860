"""The Dramatiq broker: Redis in production, an in-process one for `webhooks serve`."""

from __future__ import annotations

from collections.abc import Sequence

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware.asyncio import AsyncIO

from workers.actor import BATCH_SIZE, CloseDeliverer, declare_deliver, delivery_message


def create_broker(redis_url: str | None) -> dramatiq.Broker:
    """A broker with the `deliver` actor declared; in-process when `redis_url` is None."""
    broker: dramatiq.Broker = (
        RedisBroker(url=redis_url) if redis_url else StubBroker()  # type: ignore[no-untyped-call]
    )
    broker.add_middleware(AsyncIO())
    broker.add_middleware(CloseDeliverer())
    declare_deliver(broker)
    return broker


def enqueue_deliveries(broker: dramatiq.Broker, delivery_ids: Sequence[str]) -> None:
    """Queue the deliveries in messages of up to `BATCH_SIZE` (blocking)."""
    for start in range(0, len(delivery_ids), BATCH_SIZE):
        broker.enqueue(delivery_message(delivery_ids[start : start + BATCH_SIZE]))


# An idle Redis consumer sleeps up to this long between fetches: it bounds the latency
# an idle system adds (Dramatiq's default, 1 s, would dominate it).
IDLE_POLL_MS = 20


def start_worker(broker: dramatiq.Broker, *, threads: int) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=IDLE_POLL_MS)
    worker.start()
    return worker
