"""`Capacity`: batches take their slots all at once and give each back when done."""

from __future__ import annotations

import asyncio

import pytest

from workers.capacity import Capacity


async def test_a_batch_waits_for_all_its_slots_and_early_returns_let_it_in() -> None:
    capacity = Capacity(4)
    entered = asyncio.Event()

    async def second_batch() -> None:
        async with capacity.hold(3):
            entered.set()

    async with capacity.hold(3) as first:
        waiting = asyncio.create_task(second_batch())
        await asyncio.sleep(0.01)
        # 1 free of the 3 the second batch needs: it waits
        assert not entered.is_set()
        await first.give(1)
        await asyncio.sleep(0.01)
        assert not entered.is_set()
        # 3 free: it gets in while the first still holds one
        await first.give(1)
        await asyncio.wait_for(entered.wait(), timeout=1)
        assert first.count == 1
    await waiting


async def test_slots_come_back_when_the_batch_fails() -> None:
    capacity = Capacity(2)

    with pytest.raises(RuntimeError):
        async with capacity.hold(2) as held:
            await held.give(1)
            raise RuntimeError("boom")

    async with capacity.hold(2) as held:
        assert held.count == 2


async def test_a_slot_is_given_back_once_however_often_it_is_given() -> None:
    capacity = Capacity(2)
    async with capacity.hold(1) as held:
        await held.give(5)
        assert held.count == 0
    # Two slots free, not more: a third holder of 1 would wait
    async with capacity.hold(2):
        blocked = asyncio.create_task(asyncio.wait_for(_hold_one(capacity), timeout=0.05))
        with pytest.raises(TimeoutError):
            await blocked


async def _hold_one(capacity: Capacity) -> None:
    async with capacity.hold(1):
        pass


@pytest.mark.parametrize("count", [0, 3])
async def test_a_batch_takes_one_to_all_slots(count: int) -> None:
    with pytest.raises(ValueError, match="1 to 2"):
        async with Capacity(2).hold(count):
            pass
