"""The `deliver` actor on Dramatiq's StubBroker and a real Worker, POSTing to a real
receiver on 127.0.0.1: retries with growing gaps until delivered, a blocked target that
fails at once, duplicate messages, and the per-process deliverer's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import dramatiq
import pytest
from standardwebhooks import Webhook

import core.database
import workers.actor
from core.database import Database
from core.settings import Settings, get_settings
from tests.outbox.helpers import (
    attempts_of,
    delivery,
    eventually,
    new_client_id,
    new_config,
    new_delivery,
)
from tests.receivers import SPEC_HEADERS, Receiver
from workers.actor import BATCH_SIZE, QUEUE_NAME
from workers.broker import create_broker, enqueue_deliveries, start_worker
from workers.errors import TargetBlocked

MIN_BACKOFF_MS = 100
DEADLINE_S = 15.0
# Paths of the receiver (see `tests.receivers.Receiver`).
HOOK = "/ok/hook"
FLAKY = "/turns/500,500,200/hook"
FIRST_FAILS = "/turns/500,200/hook"
SLOW = "/slow/0.5/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP receiver on 127.0.0.1 (`tests.receivers`), in a thread of its own."""
    with Receiver().running() as running:
        yield running


@pytest.fixture
def allow_private() -> bool:
    return True


@pytest.fixture
def actor_settings(
    monkeypatch: pytest.MonkeyPatch, isolated_url: str, allow_private: bool
) -> Iterator[Settings]:
    """The worker reads its settings from the environment, once per process (cached)."""
    env = {
        "DATABASE_URL": isolated_url,
        "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "1" if allow_private else "0",
        "WEBHOOKS_MAX_ATTEMPTS": "5",
        "WEBHOOKS_MIN_BACKOFF_MS": str(MIN_BACKOFF_MS),
        "WEBHOOKS_MAX_BACKOFF_MS": "2000",
        "WEBHOOKS_REQUEST_TIMEOUT_S": "5",
        "WEBHOOKS_WORKER_CONCURRENCY": "4",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts like a new worker process: no deliverer yet."""
    assert workers.actor._deliverer is None


@contextlib.asynccontextmanager
async def _running_worker(threads: int = 2) -> AsyncIterator[dramatiq.Broker]:
    """A StubBroker with the `deliver` actor and a running Worker; stopping the worker
    closes the process's deliverer, so the next one starts afresh."""
    broker = create_broker(None)
    worker = start_worker(broker, threads=threads)
    try:
        yield broker
    finally:
        # Off the loop: stop() waits for the worker's threads.
        await asyncio.to_thread(worker.stop)
        broker.close()
    assert workers.actor._deliverer is None, "worker.stop() closes the deliverer"


@pytest.fixture
async def broker(actor_settings: Settings, fresh_process: None) -> AsyncIterator[dramatiq.Broker]:
    async with _running_worker() as broker:
        yield broker


async def _all_delivered(db: Database, ids: list[str]) -> bool:
    rows = [await delivery(db, delivery_id) for delivery_id in ids]
    return all(row["status"] == "delivered" for row in rows)


async def _wait_for_status(db: Database, delivery_id: str, status: str) -> dict[str, Any]:
    async def reached() -> bool:
        return bool((await delivery(db, delivery_id))["status"] == status)

    await eventually(reached, timeout_s=DEADLINE_S)
    return await delivery(db, delivery_id)


async def test_a_flaky_receiver_gets_the_delivery_on_the_third_attempt(
    broker: dramatiq.Broker, idb: Database, receiver: Receiver
) -> None:
    # Given a receiver that fails twice with 500 and then answers 200
    config = await new_config(idb, await new_client_id(idb), url=receiver.url(FLAKY))
    delivery_id = await new_delivery(idb, config, content={"id": "s-1"})

    # When the delivery is enqueued
    enqueue_deliveries(broker, [delivery_id])

    # Then it is delivered on the third attempt, after growing gaps
    row = await _wait_for_status(idb, delivery_id, "delivered")
    assert row["attempt_count"] == 3
    assert row["delivered_at"] is not None and row["next_attempt_at"] is None
    attempts = await attempts_of(idb, delivery_id)
    assert [a["number"] for a in attempts] == [1, 2, 3]
    assert [a["status_code"] for a in attempts] == [500, 500, 200]
    assert [a["error"] for a in attempts] == ["http_status", "http_status", None]
    assert [a["response_body"] for a in attempts] == ["nope", "nope", "ok"]
    hits = receiver.at(FLAKY)
    assert len(hits) == 3
    first_gap = hits[1].at - hits[0].at
    second_gap = hits[2].at - hits[1].at
    assert first_gap >= MIN_BACKOFF_MS * 0.8 / 1000
    assert second_gap >= 4 * MIN_BACKOFF_MS * 0.8 / 1000
    assert second_gap > first_gap
    started = [a["started_at"] for a in attempts]
    assert started[2] - started[1] > started[1] - started[0]
    # and every request was the same signed message
    for hit in hits:
        headers = {name: hit.headers[name] for name in SPEC_HEADERS}
        assert headers["webhook-id"] == delivery_id
        assert Webhook(config["signing_secret"]).verify(hit.body, headers) == {
            "event_type": "survey_created",
            "content": {"id": "s-1"},
        }
    assert len({hit.body for hit in hits}) == 1


async def test_a_duplicate_message_sends_nothing_more(
    broker: dramatiq.Broker, idb: Database, receiver: Receiver
) -> None:
    config = await new_config(idb, await new_client_id(idb), url=receiver.url(HOOK))
    delivery_id = await new_delivery(idb, config)

    enqueue_deliveries(broker, [delivery_id])
    await _wait_for_status(idb, delivery_id, "delivered")
    enqueue_deliveries(broker, [delivery_id, delivery_id])
    await asyncio.to_thread(broker.join, QUEUE_NAME, timeout=int(DEADLINE_S * 1000))

    assert len(receiver.received) == 1
    assert len(await attempts_of(idb, delivery_id)) == 1


async def test_many_deliveries_share_one_deliverer(
    broker: dramatiq.Broker, idb: Database, receiver: Receiver
) -> None:
    config = await new_config(idb, await new_client_id(idb), url=receiver.url(HOOK))
    ids = [await new_delivery(idb, config) for _ in range(10)]

    enqueue_deliveries(broker, ids)
    for delivery_id in ids:
        await _wait_for_status(idb, delivery_id, "delivered")

    assert sorted(hit.headers["webhook-id"] for hit in receiver.received) == sorted(ids)
    assert workers.actor._deliverer is not None


@pytest.mark.parametrize("allow_private", [False])
async def test_a_blocked_target_fails_after_one_attempt(
    broker: dramatiq.Broker, idb: Database, receiver: Receiver
) -> None:
    # Given private targets are refused and a configuration that points at 127.0.0.1
    config = await new_config(idb, await new_client_id(idb), url=receiver.url(HOOK))
    delivery_id = await new_delivery(idb, config)

    # When the delivery is enqueued
    enqueue_deliveries(broker, [delivery_id])

    # Then the actor gives up at once: Dramatiq does not retry the message
    with pytest.raises(TargetBlocked):
        await asyncio.to_thread(broker.join, QUEUE_NAME, timeout=int(DEADLINE_S * 1000))
    row = await delivery(idb, delivery_id)
    assert row["status"] == "failed"
    assert row["next_attempt_at"] is None
    [attempt] = await attempts_of(idb, delivery_id)
    assert (attempt["number"], attempt["status_code"], attempt["error"]) == (
        1,
        None,
        "blocked_target",
    )
    assert receiver.received == []


async def test_the_body_is_sent_as_stored(
    broker: dramatiq.Broker, idb: Database, receiver: Receiver
) -> None:
    config = await new_config(idb, await new_client_id(idb), url=receiver.url(HOOK))
    delivery_id = await new_delivery(
        idb, config, event_type="survey_finished", content={"answers": {"q": "ü"}}
    )

    enqueue_deliveries(broker, [delivery_id])
    row = await _wait_for_status(idb, delivery_id, "delivered")

    [hit] = receiver.received
    assert hit.body == row["body"].encode()
    assert json.loads(hit.body) == {
        "event_type": "survey_finished",
        "content": {"answers": {"q": "ü"}},
    }


async def test_a_second_worker_in_the_process_starts_its_deliverer(
    actor_settings: Settings,
    fresh_process: None,
    idb: Database,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a database that takes a moment to connect (as a remote one does), so that
    # the first messages of a worker wait for the deliverer together
    open_database = core.database.open_database

    def slow_to_connect(url: str, **options: Any) -> Database:
        database = open_database(url, **options)
        connect = database.connect

        async def connect_slowly() -> None:
            await asyncio.sleep(0.05)
            await connect()

        setattr(database, "connect", connect_slowly)  # noqa: B010 - a method, replaced
        return database

    monkeypatch.setattr(workers.actor, "open_database", slow_to_connect)
    config = await new_config(idb, await new_client_id(idb), url=receiver.url(HOOK))

    # When one worker runs and stops, and then another starts in the same process
    # (each Worker boots its own event loop), each getting several messages at once
    for _ in range(2):
        ids = [await new_delivery(idb, config) for _ in range(4)]
        async with _running_worker(threads=4) as broker:
            enqueue_deliveries(broker, ids)

            # Then both deliver promptly
            await eventually(partial(_all_delivered, idb, ids), timeout_s=5)


async def test_stopping_the_worker_lets_the_delivery_in_flight_finish(
    actor_settings: Settings, fresh_process: None, idb: Database, receiver: Receiver
) -> None:
    # Given a receiver that takes half a second to answer, and a delivery in flight to it
    config = await new_config(idb, await new_client_id(idb), url=receiver.url(SLOW))
    delivery_id = await new_delivery(idb, config)
    async with _running_worker() as broker:
        enqueue_deliveries(broker, [delivery_id])

        async def in_flight() -> bool:
            return len(receiver.at(SLOW)) == 1

        await eventually(in_flight, timeout_s=DEADLINE_S)
        deliverer = workers.actor._deliverer
        assert deliverer is not None
        # When the worker is stopped (SIGTERM) while the request is in flight
        stopping = time.monotonic()
    waited_s = time.monotonic() - stopping

    try:
        # Then the worker waited for it: the attempt completed and is recorded as delivered
        row = await delivery(idb, delivery_id)
        assert [(a["status_code"], a["error"]) for a in await attempts_of(idb, delivery_id)] == [
            (200, None)
        ]
        assert row["status"] == "delivered"
        assert waited_s >= 0.3, "stop() returned before the request ended"
    finally:
        await _close_leftover_connections(deliverer.db)


async def _close_leftover_connections(db: Database) -> None:
    """A connection left open keeps its thread, and the test process, from exiting:
    close whatever the stopped worker left (nothing, if it disconnected)."""
    await db.disconnect()


def test_deliveries_are_queued_in_batches() -> None:
    broker = create_broker(None)
    ids = [str(n) for n in range(2 * BATCH_SIZE + 3)]

    enqueue_deliveries(broker, ids)

    queue = broker.queues[QUEUE_NAME]  # type: ignore[attr-defined]
    batches = [dramatiq.Message.decode(queue.get_nowait()).args[0] for _ in range(3)]
    assert [len(batch) for batch in batches] == [BATCH_SIZE, BATCH_SIZE, 3]
    assert [i for batch in batches for i in batch] == ids
    assert queue.empty()
    broker.close()


async def test_a_failed_delivery_of_a_batch_is_retried_on_its_own(
    broker: dramatiq.Broker, idb: Database, receiver: Receiver
) -> None:
    # Given a receiver that fails the first request it gets and accepts the rest
    config = await new_config(idb, await new_client_id(idb), url=receiver.url(FIRST_FAILS))
    ids = [await new_delivery(idb, config) for _ in range(3)]

    # When the three are sent in one message
    enqueue_deliveries(broker, ids)

    # Then all are delivered: the failed one on its second attempt, the others once
    await eventually(partial(_all_delivered, idb, ids), timeout_s=DEADLINE_S)
    rows = [await delivery(idb, delivery_id) for delivery_id in ids]
    assert sorted(row["attempt_count"] for row in rows) == [1, 1, 2]
    [retried] = [row["id"] for row in rows if row["attempt_count"] == 2]
    assert [a["status_code"] for a in await attempts_of(idb, retried)] == [500, 200]
    hits = [hit.webhook_id for hit in receiver.at(FIRST_FAILS)]
    assert sorted(hits) == sorted([*ids, retried])
    assert hits[0] == hits[-1] == retried
