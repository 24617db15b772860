"""`Lanes`: each endpoint's share of a worker, short waits for a quick endpoint, and
the turns of deliveries turned away from a slow one."""

from __future__ import annotations

import asyncio
import time

import pytest

from workers.lanes import MIN_TURN_S, TURN_HORIZON_S, Lanes


async def test_an_endpoint_gets_at_most_its_width_and_others_are_not_affected() -> None:
    lanes = Lanes(width=2, max_wait_s=0.0)

    first, second = await lanes.enter("slow"), await lanes.enter("slow")
    assert first is not None and second is not None
    assert await lanes.enter("slow") is None
    assert await lanes.enter("other") is not None
    assert lanes.in_flight("slow") == 2

    lanes.leave("slow", first)
    assert await lanes.enter("slow") is not None


async def test_a_quick_endpoint_s_deliveries_wait_their_turn_in_order() -> None:
    lanes = Lanes(width=1, max_wait_s=1.0)
    held = await lanes.enter("quick")
    assert held is not None
    order: list[int] = []

    async def queued(number: int) -> None:
        started = await lanes.enter("quick")
        assert started is not None
        order.append(number)
        lanes.leave("quick", started)

    waiting = [asyncio.create_task(queued(number)) for number in range(3)]
    await asyncio.sleep(0)
    assert order == []  # the lane is full: they wait
    lanes.leave("quick", held)
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=1)

    assert order == [0, 1, 2]
    assert lanes.in_flight("quick") == 0


async def test_a_hanging_endpoint_turns_deliveries_away_at_once() -> None:
    lanes = Lanes(width=1, max_wait_s=0.05)
    assert await lanes.enter("hanging") is not None
    await asyncio.sleep(0.1)  # the attempt in flight has run longer than any wait

    started = time.monotonic()
    assert await lanes.enter("hanging") is None
    assert time.monotonic() - started < 0.05


async def test_a_wait_that_runs_out_turns_the_delivery_away_and_leaves_no_trace() -> None:
    lanes = Lanes(width=1, max_wait_s=0.02)
    held = await lanes.enter("stuck")
    assert held is not None

    assert await lanes.enter("stuck") is None  # waited, nothing freed

    lanes.leave("stuck", held)
    assert lanes.in_flight("stuck") == 0
    assert await lanes.enter("stuck") is not None


async def test_a_cancelled_waiter_does_not_keep_a_place() -> None:
    lanes = Lanes(width=1, max_wait_s=1.0)
    held = await lanes.enter("endpoint")
    assert held is not None
    waiter = asyncio.create_task(lanes.enter("endpoint"))
    await asyncio.sleep(0)

    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    lanes.leave("endpoint", held)

    assert lanes.in_flight("endpoint") == 0


async def test_turns_are_spread_by_the_duration_over_the_width() -> None:
    lanes = Lanes(width=4, max_wait_s=0.0)
    for _ in range(4):
        assert await lanes.enter("slow") is not None
    await asyncio.sleep(0.4)  # the attempts in flight have run 0.4 s: at least that slow

    turns = [lanes.book_turn_s("slow") for _ in range(3)]

    # each turn about 0.4 / 4 s after the one before
    assert turns[0] == pytest.approx(0.1, abs=0.03)
    assert turns[1] - turns[0] == pytest.approx(0.1, abs=0.03)
    assert turns[2] - turns[1] == pytest.approx(0.1, abs=0.03)


async def test_a_quick_endpoint_s_turns_are_close() -> None:
    lanes = Lanes(width=1, max_wait_s=0.0)
    for _ in range(3):
        started = await lanes.enter("quick")
        assert started is not None
        lanes.leave("quick", started)
    assert await lanes.enter("quick") is not None

    assert lanes.book_turn_s("quick") == pytest.approx(MIN_TURN_S, abs=0.01)


async def test_no_turn_is_booked_beyond_the_horizon() -> None:
    lanes = Lanes(width=1, max_wait_s=0.0)
    assert await lanes.enter("hanging") is not None
    await asyncio.sleep(0.2)  # its attempt has run 0.2 s: a turn every 0.2 s

    turns = [lanes.book_turn_s("hanging") for _ in range(int(TURN_HORIZON_S / 0.2) + 20)]

    assert max(turns) <= TURN_HORIZON_S
    assert turns[-1] == pytest.approx(TURN_HORIZON_S, abs=0.05)


def test_a_lane_is_at_least_one_wide() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Lanes(width=0, max_wait_s=1.0)
