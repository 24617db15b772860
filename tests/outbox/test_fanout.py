"""Fan-out: each outbox event becomes one delivery per subscribed configuration of the
same client, exactly once, however many fan-outs run at once (both backends)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from core import configs
from core.database import Database
from core.tables import deliveries, outbox
from outbox.fanout import Fanout, fan_out_batch
from outbox.writer import add_event
from tests.outbox.helpers import (
    connected,
    deliveries_of,
    new_client_id,
    new_config,
    outbox_rows,
)

BATCH = 1000


async def _drain(db: Database, *, batch_size: int = BATCH) -> list[Fanout]:
    """Fan out until the outbox is empty (other tests' events included)."""
    rounds: list[Fanout] = []
    while True:
        fanout = await fan_out_batch(db, batch_size=batch_size)
        rounds.append(fanout)
        if fanout.events == 0:
            return rounds


async def _event(db: Database, client_id: str, event_type: str, content: dict[str, Any]) -> str:
    async with db.transaction():
        return await add_event(db, client_id=client_id, event_type=event_type, content=content)


async def test_one_delivery_per_subscribed_configuration_of_the_same_client(
    db: Database,
) -> None:
    # Given a client with configurations of every kind, and another client
    client_id = await new_client_id(db)
    created = await new_config(db, client_id, events=["survey_created"])
    both = await new_config(db, client_id, events=["survey_created", "survey_finished"])
    finished_only = await new_config(db, client_id, events=["survey_finished"])
    disabled = await new_config(db, client_id, events=["survey_created"], enabled=False)
    deleted = await new_config(db, client_id, events=["survey_created"])
    assert await configs.delete_config(db, client_id, deleted["id"]) is not None
    other_client = await new_client_id(db)
    others = await new_config(db, other_client, events=["survey_created"])
    content = {"id": "s-1", "patient_id": "p", "answers": {"q": "é"}}
    event_id = await _event(db, client_id, "survey_created", content)

    # When the outbox is fanned out
    rounds = await _drain(db)

    # Then each subscribed configuration of that client gets one delivery
    made = {row["config_id"]: row for row in await deliveries_of(db, event_id=event_id)}
    assert set(made) == {created["id"], both["id"], disabled["id"]}
    assert finished_only["id"] not in made and deleted["id"] not in made
    assert others["id"] not in made
    for config_id in (created["id"], both["id"]):
        assert made[config_id]["status"] == "pending"
        assert made[config_id]["next_attempt_at"] is not None
    assert made[disabled["id"]]["status"] == "held"
    assert made[disabled["id"]]["next_attempt_at"] is None
    for row in made.values():
        assert row["client_id"] == client_id
        assert row["event_type"] == "survey_created"
        assert row["attempt_count"] == 0
        assert row["lease_expires_at"] is None
        assert json.loads(row["body"]) == {"event_type": "survey_created", "content": content}
    pending_ids = {delivery_id for fanout in rounds for delivery_id in fanout.pending_ids}
    assert {made[created["id"]]["id"], made[both["id"]]["id"]} <= pending_ids
    assert made[disabled["id"]]["id"] not in pending_ids, "held deliveries are not enqueued"
    [row] = await outbox_rows(db, client_id)
    assert row["dispatched_at"] is not None


async def test_one_batch_fans_out_the_events_of_many_clients(db: Database) -> None:
    # Given events of more clients than one subscriber read takes (16)
    await _drain(db)
    configs_by_client = {}
    for _ in range(37):
        client_id = await new_client_id(db)
        configs_by_client[client_id] = await new_config(db, client_id, events=["survey_created"])
    event_ids = {
        await _event(db, client_id, "survey_created", {}): client_id
        for client_id in configs_by_client
    }

    # When one batch fans them out
    fanout = await fan_out_batch(db, batch_size=100)

    # Then each event has its one delivery, to its own client's configuration
    assert (fanout.events, len(fanout.pending_ids)) == (37, 37)
    for event_id, client_id in event_ids.items():
        [made] = await deliveries_of(db, event_id=event_id)
        assert made["config_id"] == configs_by_client[client_id]["id"]


async def test_the_body_is_exactly_event_type_and_content(db: Database) -> None:
    client_id = await new_client_id(db)
    await new_config(db, client_id, events=["survey_finished"])
    content = {"id": "s-2", "answers": {"nested": {"list": [1, None, True]}}}
    event_id = await _event(db, client_id, "survey_finished", content)

    await _drain(db)

    [row] = await deliveries_of(db, event_id=event_id)
    body = json.loads(row["body"])
    assert list(body) == ["event_type", "content"]
    assert body == {"event_type": "survey_finished", "content": content}


async def test_an_event_without_subscribers_is_dispatched_without_deliveries(
    db: Database,
) -> None:
    client_id = await new_client_id(db)
    await new_config(db, client_id, events=["survey_finished"])
    event_id = await _event(db, client_id, "survey_created", {})

    await _drain(db)

    assert await deliveries_of(db, event_id=event_id) == []
    [row] = await outbox_rows(db, client_id)
    assert row["dispatched_at"] is not None


async def test_fanning_out_again_creates_no_duplicates(db: Database) -> None:
    # Given an event fanned out once
    client_id = await new_client_id(db)
    config = await new_config(db, client_id)
    event_id = await _event(db, client_id, "survey_created", {})
    await _drain(db)
    [first] = await deliveries_of(db, event_id=event_id)

    # When the fan-out runs again, and even when the event is marked undispatched again
    # (a poller that died after inserting the deliveries but before marking the row)
    again = await _drain(db)
    await db.execute(
        outbox.update().where(outbox.c.event_id == event_id).values(dispatched_at=None)
    )
    redone = await _drain(db)

    # Then there is still one delivery, and it is not enqueued again: the redone fan-out's
    # id names no delivery
    assert [row["id"] for row in await deliveries_of(db, event_id=event_id)] == [first["id"]]
    assert first["config_id"] == config["id"]
    assert all(first["id"] not in fanout.pending_ids for fanout in again + redone)
    [ghost] = [delivery_id for fanout in again + redone for delivery_id in fanout.pending_ids]
    assert await db.fetch_one(sa.select(deliveries).where(deliveries.c.id == ghost)) is None
    [row] = await outbox_rows(db, client_id)
    assert row["dispatched_at"] is not None


async def test_a_batch_claims_at_most_batch_size_events_in_order(db: Database) -> None:
    await _drain(db)
    client_id = await new_client_id(db)
    await new_config(db, client_id)
    ids = [await _event(db, client_id, "survey_created", {"n": n}) for n in range(5)]

    first = await fan_out_batch(db, batch_size=2)

    assert first.events == 2
    dispatched = [
        row["event_id"] for row in await outbox_rows(db, client_id) if row["dispatched_at"]
    ]
    assert dispatched == ids[:2]
    rest = await _drain(db, batch_size=2)
    assert sum(fanout.events for fanout in rest) == 3


# --- concurrent fan-outs -----------------------------------------------------------------


EVENTS = 300


async def _fan_out_until_empty(db: Database, batch_size: int) -> list[Fanout]:
    rounds: list[Fanout] = []
    while True:
        fanout = await fan_out_batch(db, batch_size=batch_size)
        if fanout.events == 0:
            return rounds
        rounds.append(fanout)
        await asyncio.sleep(0)


@pytest.mark.parametrize("batch_size", [7, 50])
async def test_concurrent_fan_outs_dispatch_each_event_once(
    isolated_url: str, batch_size: int
) -> None:
    # Given 300 events for a client with two subscribed configurations
    setup = await connected(isolated_url)
    client_id = await new_client_id(setup)
    first, second = await new_config(setup, client_id), await new_config(setup, client_id)
    async with setup.transaction():
        for number in range(EVENTS):
            await add_event(
                setup, client_id=client_id, event_type="survey_created", content={"n": number}
            )

    # When two pollers, each with its own connection pool, fan out at once
    pollers = [await connected(isolated_url), await connected(isolated_url)]
    try:
        results = await asyncio.gather(
            *(_fan_out_until_empty(poller, batch_size) for poller in pollers)
        )
    finally:
        for poller in pollers:
            await poller.disconnect()

    # Then every event was claimed by exactly one of them, and fanned out exactly once
    try:
        claimed = sum(fanout.events for rounds in results for fanout in rounds)
        assert claimed == EVENTS
        enqueued = [i for rounds in results for fanout in rounds for i in fanout.pending_ids]
        assert len(enqueued) == len(set(enqueued)) == 2 * EVENTS
        rows = await deliveries_of(setup)
        pairs = Counter((row["event_id"], row["config_id"]) for row in rows)
        assert len(rows) == 2 * EVENTS
        assert set(pairs.values()) == {1}
        assert {config_id for _, config_id in pairs} == {first["id"], second["id"]}
        assert {row["id"] for row in rows} == set(enqueued)
        undispatched = await setup.fetch_val(
            sa.select(sa.func.count()).select_from(outbox).where(outbox.c.dispatched_at.is_(None))
        )
        assert undispatched == 0
        assert await setup.fetch_val(sa.select(sa.func.count()).select_from(deliveries)) == (
            2 * EVENTS
        )
    finally:
        await setup.disconnect()
