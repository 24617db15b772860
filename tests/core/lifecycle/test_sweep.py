"""The sweep: pending deliveries that no worker is on (due for longer than the grace,
no live lease) are returned once per grace period; final and held ones never are.
Time is moved with freezegun; every test has a database of its own (both backends)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory

from core.database import Database, fetch_all
from core.lifecycle import sweep_stranded
from core.lifecycle.sweep import MAX_QUEUE_WAIT
from core.tables import deliveries
from tests.conftest import CLOCK_START
from tests.outbox.helpers import (
    connected,
    delivery,
    new_client_id,
    new_config,
    new_delivery,
)

T0 = CLOCK_START
GRACE_S = 60.0
GRACE = timedelta(seconds=GRACE_S)
SECOND = timedelta(seconds=1)


@pytest.fixture
async def config(idb: Database, clock: FrozenDateTimeFactory) -> dict[str, Any]:
    return await new_config(idb, await new_client_id(idb))


async def test_a_stranded_delivery_is_returned_and_made_due_again(
    idb: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    # Given a pending delivery, due at T0, that no worker took
    delivery_id = await new_delivery(idb, config)
    assert (await delivery(idb, delivery_id))["next_attempt_at"] == T0

    # When the sweep runs more than the grace later
    clock.move_to(T0 + GRACE + SECOND)
    stranded = await sweep_stranded(idb, grace_s=GRACE_S)

    # Then it is returned and its due time is now, so an immediate sweep skips it
    assert stranded == [delivery_id]
    row = await delivery(idb, delivery_id)
    assert row["next_attempt_at"] == T0 + GRACE + SECOND
    assert row["status"] == "pending"
    assert row["lease_expires_at"] is None
    assert await sweep_stranded(idb, grace_s=GRACE_S) == []
    clock.tick(GRACE - SECOND)
    assert await sweep_stranded(idb, grace_s=GRACE_S) == []
    # and once another grace has passed without a worker, it is returned again
    clock.tick(2 * SECOND)
    assert await sweep_stranded(idb, grace_s=GRACE_S) == [delivery_id]


async def test_a_delivery_due_for_less_than_the_grace_is_left_alone(
    idb: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    await new_delivery(idb, config)
    await new_delivery(idb, config, next_attempt_at=T0 + timedelta(hours=1))

    clock.move_to(T0 + GRACE - SECOND)

    assert await sweep_stranded(idb, grace_s=GRACE_S) == []


async def test_a_delivery_with_a_live_lease_is_not_swept(
    idb: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    # Given a delivery due long ago whose worker holds a lease until T0 + 10 min
    lease_end = T0 + timedelta(minutes=10)
    delivery_id = await new_delivery(idb, config, lease_expires_at=lease_end)

    # While the lease holds, the sweep leaves it to its worker
    clock.move_to(lease_end - SECOND)
    assert await sweep_stranded(idb, grace_s=GRACE_S) == []
    assert (await delivery(idb, delivery_id))["next_attempt_at"] == T0

    # Once the lease has expired (the worker died), the sweep returns it
    clock.move_to(lease_end + SECOND)
    assert await sweep_stranded(idb, grace_s=GRACE_S) == [delivery_id]


async def test_a_delivery_behind_the_workers_place_in_a_long_queue_waits_for_them(
    idb: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    # Given a delivery due at T0 with no lease, and the workers on one that fell due
    # before it (a backlog: its message is still queued behind theirs)
    queued = await new_delivery(idb, config)
    lease_end = T0 + timedelta(hours=1)
    ahead = await new_delivery(idb, config, next_attempt_at=T0 - SECOND, lease_expires_at=lease_end)

    # When the sweep runs long after the grace, it leaves the queued one alone
    clock.move_to(T0 + 3 * GRACE)
    assert await sweep_stranded(idb, grace_s=GRACE_S) == []

    # Then once the workers have moved on to deliveries due more than the grace after
    # it, its message is gone: it is stranded
    await fetch_all(
        idb,
        deliveries.update()
        .where(deliveries.c.id == ahead)
        .values(status="delivered", lease_expires_at=None),
    )
    await new_delivery(idb, config, next_attempt_at=T0 + GRACE, lease_expires_at=lease_end)
    assert await sweep_stranded(idb, grace_s=GRACE_S) == [queued]


async def test_the_sweep_waits_for_the_workers_at_most_max_queue_wait(
    idb: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    # Given a delivery due at T0 with no lease, and the workers stuck far behind it (a
    # delivery in flight due an hour earlier)
    queued = await new_delivery(idb, config)
    lease_end = T0 + timedelta(days=1)
    await new_delivery(
        idb, config, next_attempt_at=T0 - timedelta(hours=1), lease_expires_at=lease_end
    )

    # Then the sweep waits for them no longer than the grace and MAX_QUEUE_WAIT
    clock.move_to(T0 + GRACE + MAX_QUEUE_WAIT - SECOND)
    assert await sweep_stranded(idb, grace_s=GRACE_S) == []
    clock.move_to(T0 + GRACE + MAX_QUEUE_WAIT + SECOND)
    assert await sweep_stranded(idb, grace_s=GRACE_S) == [queued]


async def test_an_expired_lease_is_swept(
    idb: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    delivery_id = await new_delivery(idb, config, lease_expires_at=T0 + SECOND)

    clock.move_to(T0 + GRACE + 2 * SECOND)

    assert await sweep_stranded(idb, grace_s=GRACE_S) == [delivery_id]


@pytest.mark.parametrize("status", ["delivered", "failed", "held", "cancelled"])
async def test_final_and_held_deliveries_are_never_swept(
    idb: Database, clock: FrozenDateTimeFactory, config: dict[str, Any], status: str
) -> None:
    # Even with a stale due time and no lease
    delivery_id = await new_delivery(idb, config, status=status, next_attempt_at=T0)

    clock.move_to(T0 + timedelta(days=30))

    assert await sweep_stranded(idb, grace_s=GRACE_S) == []
    row = await delivery(idb, delivery_id)
    assert row["status"] == status
    assert row["next_attempt_at"] == T0


async def test_a_grace_of_zero_sweeps_everything_due(
    idb: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    # `webhooks serve` sweeps with no grace at start-up: nothing is queued in a new process
    due = await new_delivery(idb, config)
    await new_delivery(idb, config, next_attempt_at=T0 + SECOND)

    assert await sweep_stranded(idb, grace_s=0) == [due]


async def test_concurrent_sweeps_return_each_delivery_once(
    isolated_url: str, idb: Database, clock: FrozenDateTimeFactory, config: dict[str, Any]
) -> None:
    # Given 60 stranded deliveries
    ids = {await new_delivery(idb, config) for _ in range(60)}
    clock.move_to(T0 + GRACE + SECOND)

    # When two pollers, each with its own pool, sweep at once
    sweepers = [await connected(isolated_url), await connected(isolated_url)]
    try:
        results = await asyncio.gather(
            *(sweep_stranded(sweeper, grace_s=GRACE_S) for sweeper in sweepers)
        )
    finally:
        for sweeper in sweepers:
            await sweeper.disconnect()

    # Then between them they returned each delivery exactly once
    returned = [delivery_id for result in results for delivery_id in result]
    assert sorted(returned) == sorted(ids)
