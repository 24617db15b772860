"""The poller: fan-out then enqueue, the sweep as the backstop for a lost enqueue, the
stop event, and the wake-ups (in-process and through Redis) that beat the poll interval."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from core.database import Database
from outbox.poller import Poller
from outbox.wakeup import CHANNEL, LocalWakeup, RedisWakeup, Wakeup
from tests.outbox.helpers import (
    add_events,
    connected,
    deliveries_of,
    eventually,
    new_client_id,
    new_config,
)
from tests.servers import RedisServer, free_port

SLOW_POLL_S = 10.0
# Far below the poll interval, so a wake-up is told from a poll even on a busy machine.
PROMPT_S = 3.0


class Queue:
    """An in-memory `enqueue`: records every id it is given (from the poller's thread)."""

    def __init__(self, *, failures: int = 0) -> None:
        self.ids: list[str] = []
        self.failures = failures
        self._lock = threading.Lock()

    def __call__(self, delivery_ids: Sequence[str]) -> None:
        with self._lock:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("the broker is down")
            self.ids.extend(delivery_ids)


def _poller(
    db: Database,
    queue: Queue,
    wakeup: Wakeup | None = None,
    *,
    poll_interval_s: float = SLOW_POLL_S,
    sweep_grace_s: float = 60.0,
    sweep_interval_s: float = 1.0,
    batch_size: int = 500,
) -> Poller:
    return Poller(
        db,
        queue,
        wakeup or LocalWakeup(),
        poll_interval_s=poll_interval_s,
        sweep_grace_s=sweep_grace_s,
        sweep_interval_s=sweep_interval_s,
        batch_size=batch_size,
    )


@contextlib.asynccontextmanager
async def _running(poller: Poller) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        yield task
    finally:
        stop.set()
        poller.wakeup.notify()
        await asyncio.wait_for(task, PROMPT_S * 5)


async def _pending_ids(db: Database, client_id: str) -> set[str]:
    return {row["id"] for row in await deliveries_of(db, client_id=client_id, status="pending")}


# --- run_once ------------------------------------------------------------------------


async def test_run_once_enqueues_every_pending_delivery_once(idb: Database) -> None:
    # Given 10 events for a client with two enabled configurations and a disabled one
    client_id = await new_client_id(idb)
    await new_config(idb, client_id)
    await new_config(idb, client_id, events=["survey_created"])
    await new_config(idb, client_id, enabled=False)
    await add_events(idb, client_id, "survey_created", 10)
    queue = Queue()
    poller = _poller(idb, queue, batch_size=3)

    # When one round runs (several batches), and then another
    await poller.run_once()
    first = list(queue.ids)
    await poller.run_once()

    # Then each pending delivery was enqueued once; held ones were not
    pending = await _pending_ids(idb, client_id)
    assert len(pending) == 20
    assert sorted(first) == sorted(pending)
    assert queue.ids == first, "a second round enqueues nothing new"
    assert len(await deliveries_of(idb, client_id=client_id, status="held")) == 10


async def test_dispatch_reports_the_events_handled(idb: Database) -> None:
    client_id = await new_client_id(idb)
    await new_config(idb, client_id)
    await add_events(idb, client_id, "survey_finished", 7)
    poller = _poller(idb, Queue(), batch_size=3)

    assert await poller.dispatch() == 7
    assert await poller.dispatch() == 0


async def test_a_lost_enqueue_is_recovered_by_the_sweep(idb: Database) -> None:
    # Given a broker that refuses the first enqueue, after the fan-out committed
    client_id = await new_client_id(idb)
    await new_config(idb, client_id)
    await add_events(idb, client_id, "survey_created", 3)
    queue = Queue(failures=1)
    poller = _poller(idb, queue, sweep_grace_s=0.0, sweep_interval_s=0.0)

    with pytest.raises(ConnectionError):
        await poller.run_once()
    assert queue.ids == []

    # When the next round runs
    await poller.run_once()

    # Then the sweep found the deliveries in the database and enqueued them
    assert sorted(queue.ids) == sorted(await _pending_ids(idb, client_id))
    assert len(queue.ids) == 3


# --- run ------------------------------------------------------------------------------


def _idle_waiting(poller: Poller) -> Callable[[], Awaitable[bool]]:
    """Whether `poller` has finished a round and waits for the next (it waits in its
    wake-up's `wait`, which this wraps to tell)."""
    waiting = asyncio.Event()
    real_wait = poller.wakeup.wait

    async def wait(timeout_s: float) -> None:
        waiting.set()
        await real_wait(timeout_s)

    poller.wakeup.wait = wait  # type: ignore[method-assign]

    async def check() -> bool:
        return waiting.is_set()

    return check


async def test_run_stops_when_the_stop_event_is_set(idb: Database) -> None:
    poller = _poller(idb, Queue())
    stop = asyncio.Event()
    idle = _idle_waiting(poller)
    task = asyncio.create_task(poller.run(stop))
    await eventually(idle, timeout_s=PROMPT_S)
    assert not task.done()

    started = time.monotonic()
    stop.set()
    poller.wakeup.notify()
    await asyncio.wait_for(task, PROMPT_S)

    assert time.monotonic() - started < PROMPT_S


async def test_run_returns_at_once_when_already_stopped(idb: Database) -> None:
    queue = Queue()
    client_id = await new_client_id(idb)
    await new_config(idb, client_id)
    await add_events(idb, client_id, "survey_created", 1)
    stop = asyncio.Event()
    stop.set()

    await asyncio.wait_for(_poller(idb, queue).run(stop), PROMPT_S)

    assert queue.ids == []


async def test_run_keeps_polling_after_a_failed_round(idb: Database) -> None:
    # Given a broker that fails once, and a short poll interval
    client_id = await new_client_id(idb)
    await new_config(idb, client_id)
    await add_events(idb, client_id, "survey_created", 2)
    queue = Queue(failures=1)
    poller = _poller(idb, queue, poll_interval_s=0.05, sweep_grace_s=0.0, sweep_interval_s=0.0)

    # When it runs
    async with _running(poller):

        async def enqueued() -> bool:
            return len(queue.ids) == 2

        # Then the deliveries of the failed round are enqueued by a later one's sweep
        await eventually(enqueued, timeout_s=5)
    assert set(queue.ids) == await _pending_ids(idb, client_id)


async def test_a_round_whose_connection_died_mid_transaction_does_not_stick(pg_url: str) -> None:
    # Given a poller on PostgreSQL whose first round holds a transaction open
    db = await connected(pg_url)
    try:
        await _recovers_from_a_killed_connection(db, pg_url)
    finally:
        await db.disconnect()


async def _recovers_from_a_killed_connection(db: Database, url: str) -> None:
    client_id = await new_client_id(db)
    await new_config(db, client_id)
    queue = Queue()
    poller = _poller(db, queue, poll_interval_s=0.05)
    real_round = poller.run_once
    rounds = 0

    async def first_round_holds_a_transaction() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            async with db.transaction():
                await db.execute(sa.text("SELECT pg_sleep(30)"))
        await real_round()

    poller.run_once = first_round_holds_a_transaction  # type: ignore[method-assign]
    async with _running(poller):
        # When the server ends that transaction's connection (as a restart would)
        await eventually(lambda: _terminate_sleeper(url), timeout_s=10)
        await add_events(db, client_id, "survey_created", 2)

        async def enqueued() -> bool:
            return len(queue.ids) == 2

        # Then later rounds run on a new connection and send the new events
        await eventually(enqueued, timeout_s=10)
    assert rounds > 1


async def _terminate_sleeper(url: str) -> bool:
    """Ends the backend running `pg_sleep` in `url`'s database; whether there was one."""
    admin = await connected(url, pool_size=1)
    try:
        killed = await admin.fetch_all(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep%'"
                " AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await admin.disconnect()
    return bool(killed)


async def test_a_local_wakeup_beats_the_poll_interval(idb: Database) -> None:
    # Given a running poller with a 5 s poll interval, idle
    client_id = await new_client_id(idb)
    await new_config(idb, client_id)
    wakeup = LocalWakeup()
    queue = Queue()
    poller = _poller(idb, queue, wakeup)
    idle = _idle_waiting(poller)
    async with _running(poller):
        await eventually(idle, timeout_s=PROMPT_S)

        # When an event is committed and the poller notified
        await add_events(idb, client_id, "survey_created", 1)
        notified = time.monotonic()
        wakeup.notify()

        # Then its delivery is enqueued well before the poll interval
        async def enqueued() -> bool:
            return len(queue.ids) == 1

        await eventually(enqueued, timeout_s=SLOW_POLL_S - 1, every_s=0.005)
        assert time.monotonic() - notified < PROMPT_S
    assert set(queue.ids) == await _pending_ids(idb, client_id)


async def test_without_a_wakeup_the_poll_interval_is_the_backstop(idb: Database) -> None:
    client_id = await new_client_id(idb)
    await new_config(idb, client_id)
    queue = Queue()
    poller = _poller(idb, queue, poll_interval_s=0.2)
    idle = _idle_waiting(poller)
    async with _running(poller):
        await eventually(idle, timeout_s=PROMPT_S)
        await add_events(idb, client_id, "survey_created", 1)

        async def enqueued() -> bool:
            return len(queue.ids) == 1

        await eventually(enqueued, timeout_s=PROMPT_S * 2)


# --- wake-ups -------------------------------------------------------------------------


async def test_local_wakeup_wait_times_out_without_a_notify() -> None:
    wakeup = LocalWakeup()
    started = time.monotonic()
    await wakeup.wait(0.05)
    assert 0.04 <= time.monotonic() - started < PROMPT_S


async def test_local_wakeup_remembers_a_notify_made_before_the_wait() -> None:
    wakeup = LocalWakeup()
    wakeup.notify()
    started = time.monotonic()
    await wakeup.wait(SLOW_POLL_S)
    assert time.monotonic() - started < PROMPT_S
    # and the notification is consumed
    started = time.monotonic()
    await wakeup.wait(0.05)
    assert time.monotonic() - started >= 0.04


async def _subscribers(redis_url: str) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        counts = await client.pubsub_numsub(CHANNEL)
    finally:
        await client.aclose()
    return int(dict(counts).get(CHANNEL.encode(), 0))


async def test_a_redis_notify_wakes_a_wait_on_another_instance(redis: RedisServer) -> None:
    listener, writer = RedisWakeup(redis.url), RedisWakeup(redis.url)
    try:
        # Given a wait on one instance, subscribed
        waiting = asyncio.create_task(listener.wait(SLOW_POLL_S))

        async def subscribed() -> bool:
            return await _subscribers(redis.url) >= 1

        await eventually(subscribed, timeout_s=5)
        assert not waiting.done()

        # When another instance notifies
        notified = time.monotonic()
        writer.notify()

        # Then the wait returns promptly
        await asyncio.wait_for(waiting, PROMPT_S)
        assert time.monotonic() - notified < PROMPT_S
    finally:
        await asyncio.sleep(0)
        await listener.close()
        await writer.close()


async def test_a_redis_wakeup_drives_a_poller(redis: RedisServer, idb: Database) -> None:
    # Given a poller woken through Redis with a 5 s poll interval, as `poller` runs
    client_id = await new_client_id(idb)
    await new_config(idb, client_id)
    queue = Queue()
    poller_wakeup, web_wakeup = RedisWakeup(redis.url), RedisWakeup(redis.url)
    try:
        async with _running(_poller(idb, queue, poller_wakeup)):

            async def subscribed() -> bool:
                return await _subscribers(redis.url) >= 1

            await eventually(subscribed, timeout_s=5)

            # When `web` commits an event and notifies
            await add_events(idb, client_id, "survey_created", 1)
            notified = time.monotonic()
            web_wakeup.notify()

            # Then the poller enqueues it well before its poll interval
            async def enqueued() -> bool:
                return len(queue.ids) == 1

            await eventually(enqueued, timeout_s=SLOW_POLL_S - 1, every_s=0.005)
            assert time.monotonic() - notified < PROMPT_S
    finally:
        await poller_wakeup.close()
        await web_wakeup.close()


async def test_a_redis_wakeup_without_redis_neither_blocks_nor_raises() -> None:
    wakeup = RedisWakeup(f"redis://127.0.0.1:{free_port()}/0")
    try:
        wakeup.notify()
        started = time.monotonic()
        await wakeup.wait(0.1)
        assert time.monotonic() - started < PROMPT_S
    finally:
        await wakeup.close()


async def _connections(redis_url: str) -> int:
    """Connections to the server, other than the one asking."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        return len(await client.client_list()) - 1
    finally:
        await client.aclose()


async def test_closing_a_redis_wakeup_right_after_notify_leaves_no_connection(
    redis: RedisServer,
) -> None:
    # As `web` does on shutdown: requests have just notified, then the app closes
    baseline = await _connections(redis.url)
    wakeup = RedisWakeup(redis.url)
    try:
        for _ in range(3):
            wakeup.notify()
        await wakeup.close()

        # (the server drops a closed connection from its list a moment later)
        async def back_to_baseline() -> bool:
            return await _connections(redis.url) == baseline

        await eventually(back_to_baseline, timeout_s=PROMPT_S)
    finally:
        # Close what the publishes opened after close(), so that no unclosed socket
        # outlives this test.
        await wakeup._redis.connection_pool.disconnect()
