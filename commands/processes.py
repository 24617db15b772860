"""The three processes of the Procfile, and `webhooks serve`, which runs all three in
one process on an in-process broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator
from functools import partial

import dramatiq
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette

from core.database import Database, open_database
from core.settings import Settings
from core.tracing import configure_tracing
from outbox.poller import Poller
from outbox.wakeup import LocalWakeup, RedisWakeup, Wakeup
from service.app import Enqueue, create_app
from workers.broker import create_broker, enqueue_deliveries, start_worker

logger = logging.getLogger("webhooks")


def _poller(settings: Settings, db: Database, broker: dramatiq.Broker, wakeup: Wakeup) -> Poller:
    return Poller(
        db,
        partial(enqueue_deliveries, broker),
        wakeup,
        poll_interval_s=settings.poll_interval_s,
        sweep_grace_s=settings.delivery_lease_s,
        retention_s=settings.retention_s,
        prune_interval_s=settings.prune_interval_s,
    )


async def redis_check(redis_url: str) -> str:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    finally:
        await client.aclose()


def _api_enqueuer(broker: dramatiq.Broker) -> Enqueue:
    async def enqueue(delivery_ids: list[str]) -> None:
        try:
            await asyncio.to_thread(enqueue_deliveries, broker, delivery_ids)
        except Exception as exc:  # the rows are due in the database: the sweep sends them
            logger.warning("enqueue failed, left to the sweep: %s", type(exc).__name__)

    return enqueue


def run_web(settings: Settings) -> None:
    configure_tracing(settings, process="web")
    if settings.redis_url:
        check = partial(redis_check, settings.redis_url)
        enqueue = _api_enqueuer(create_broker(settings.redis_url))
        app = create_app(settings, broker_check=check, enqueue=enqueue)
    else:
        app = create_app(settings)
    uvicorn.run(app, host="0.0.0.0", port=settings.port, log_config=None, access_log=False)


def run_poller(settings: Settings) -> None:
    assert settings.redis_url is not None
    redis_url = settings.redis_url
    configure_tracing(settings, process="poller")

    async def main() -> None:
        db = open_database(settings.database_url, pool_size=2)
        await db.connect()
        wakeup = RedisWakeup(redis_url)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        broker = create_broker(redis_url)
        logger.info("poller started")
        try:
            await _poller(settings, db, broker, wakeup).run(stop)
        finally:
            await wakeup.close()
            await db.disconnect()
            broker.close()

    asyncio.run(main())


def run_worker(settings: Settings) -> None:
    configure_tracing(settings, process="worker")
    broker = create_broker(settings.redis_url)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = start_worker(broker, threads=settings.worker_concurrency)
    logger.info("worker started with %d threads", settings.worker_concurrency)
    stop.wait()
    worker.stop()
    broker.close()


def serve(settings: Settings) -> None:
    """web + poller + worker in one process, SQLite by default, no Redis."""
    configure_tracing(settings, process="serve")
    wakeup = LocalWakeup()
    broker = create_broker(None)

    @contextlib.asynccontextmanager
    async def pipeline(app: Starlette) -> AsyncIterator[None]:
        worker = start_worker(broker, threads=settings.worker_concurrency)
        poller = _poller(settings, app.state.db, broker, wakeup)
        # Nothing is queued in a new process: whatever is pending and not leased by a
        # process that died is stranded, so it is sent again right away.
        await poller.sweep(grace_s=0)
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop))
        try:
            yield
        finally:
            stop.set()
            wakeup.notify()
            await task
            await asyncio.to_thread(worker.stop)
            broker.close()

    app = create_app(settings, wakeup=wakeup, enqueue=_api_enqueuer(broker), companions=[pipeline])
    uvicorn.run(app, host="0.0.0.0", port=settings.port, log_config=None, access_log=False)
