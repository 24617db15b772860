"""The Dramatiq broker: Redis in production, an in-process one for `webhooks serve`."""

from __future__ import annotations

from collections.abc import Sequence

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware.asyncio import AsyncIO

from workers.actor import ACTOR_NAME, QUEUE_NAME, CloseDeliverer, declare_deliver


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
    """Queue one message per delivery (blocking)."""
    for delivery_id in delivery_ids:
        broker.enqueue(
            dramatiq.Message(
                queue_name=QUEUE_NAME,
                actor_name=ACTOR_NAME,
                args=(delivery_id,),
                kwargs={},
                options={},
            )
        )


# An idle Redis consumer sleeps up to this long between fetches: it bounds the latency
# an idle system adds (Dramatiq's default, 1 s, would dominate it).
IDLE_POLL_MS = 20


def start_worker(broker: dramatiq.Broker, *, threads: int) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=IDLE_POLL_MS)
    worker.start()
    return worker
