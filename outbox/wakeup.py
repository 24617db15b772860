"""Waking the poller right after a commit, with its poll interval as the backstop.

`web` publishes on a Redis channel when `REDIS_URL` is set; `webhooks serve` uses an
in-process event. A lost wake-up only delays dispatch until the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import redis.asyncio as aioredis

CHANNEL = "webhooks:outbox:wake"
# A process publishes at most this often; notifies in between share the next publish.
# The poller starts a round at most as often (`outbox.poller.MIN_ROUND_INTERVAL_S`),
# so more wake-ups would only cost the web and the poller a Redis message each.
MIN_PUBLISH_INTERVAL_S = 0.020
logger = logging.getLogger("webhooks.outbox")


class Wakeup(Protocol):
    def notify(self) -> None:
        """Say that there is new work; never blocks, never raises."""

    async def wait(self, timeout_s: float) -> None:
        """Return when notified or after `timeout_s`."""

    async def close(self) -> None: ...


class LocalWakeup:
    """For one process: the writer and the poller share an event loop."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)
        self._event.clear()

    async def close(self) -> None:
        return None


class RedisWakeup(LocalWakeup):
    """Across processes: `notify` publishes; `wait` also wakes on a published message."""

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        self._redis = aioredis.Redis.from_url(redis_url)
        self._listener: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._publisher: asyncio.Task[None] | None = None
        self._again = False

    def notify(self) -> None:
        # Notifies made while a publish is on its way, or within `MIN_PUBLISH_INTERVAL_S`
        # of it, share the next one: under load the poller gets a message per interval
        # instead of one per commit; the first notify after a quiet spell goes at once.
        self._again = True
        if self._publisher is not None and not self._publisher.done():
            return
        task = asyncio.get_running_loop().create_task(self._publish_while_notified())
        self._publisher = task
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish_while_notified(self) -> None:
        loop = asyncio.get_running_loop()
        while self._again:
            self._again = False
            started = loop.time()
            await self._publish()
            await asyncio.sleep(max(0.0, started + MIN_PUBLISH_INTERVAL_S - loop.time()))

    async def _publish(self) -> None:
        try:
            await self._redis.publish(CHANNEL, b"1")
        except Exception as exc:  # a lost nudge only costs one poll interval
            logger.debug("wake-up publish failed: %s", type(exc).__name__)

    async def wait(self, timeout_s: float) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        await super().wait(timeout_s)

    async def _listen(self) -> None:
        try:
            async with self._redis.pubsub() as pubsub:
                await pubsub.subscribe(CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._event.set()
        except Exception as exc:  # re-subscribed by the next wait()
            logger.debug("wake-up listener stopped: %s", type(exc).__name__)
            await asyncio.sleep(1)

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        await self._redis.aclose()
