"""Each endpoint's share of a worker process (`WEBHOOKS_ENDPOINT_CONCURRENCY`).

At most `width` attempts to one configuration run at once in a process, so an endpoint
that hangs until the request timeout holds at most that many of the worker's slots
(and Dramatiq threads), and every other endpoint keeps the rest.

A delivery that finds its endpoint's lane full waits for a place, first come first
served, when the lane is fast enough that the wait is short (`max_wait_s`): a busy but
quick endpoint loses nothing. Otherwise it is turned away, to be released unattempted
(no attempt charged) and tried again at its turn. Turns are handed out on a virtual
clock per endpoint: each booking takes the next free turn, `duration / width` after the
previous one, so a backlog behind a slow endpoint comes back spread over the time the
lane needs to drain it, instead of all at once to be turned away again.

How long an endpoint's attempts take is its recent mean, or how long the oldest attempt
in flight has run when that is longer: an endpoint that starts hanging is seen as slow
at once, not after its first timeouts.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

# How much one attempt moves an endpoint's mean duration.
SMOOTHING = 0.2
# No two turns of one endpoint are booked closer than this.
MIN_TURN_S = 0.005
# Lanes kept for endpoints with nothing in flight, to remember their mean duration.
MAX_IDLE_LANES = 10_000
# No turn is booked further ahead than this: an endpoint that recovers from a hang gets
# its backlog back within it, instead of at the pace the hang set (those that come back
# while it still hangs are turned away again, each at most once per horizon).
TURN_HORIZON_S = 10.0


@dataclass
class _Lane:
    mean_duration_s: float = 0.0
    next_turn_at: float = 0.0
    started: list[float] = field(default_factory=list)  # the attempts in flight
    waiting: deque[asyncio.Future[float]] = field(default_factory=deque)

    def duration_s(self, now: float) -> float:
        oldest = min(self.started, default=now)
        return max(self.mean_duration_s, now - oldest)


class Lanes:
    def __init__(self, *, width: int, max_wait_s: float) -> None:
        """`width`: attempts to one endpoint at once; `max_wait_s`: the longest wait for
        a place that `enter` expects before it turns a delivery away."""
        if width < 1:
            raise ValueError("a lane is at least 1 wide")
        self.width = width
        self.max_wait_s = max_wait_s
        self._lanes: dict[str, _Lane] = {}

    async def enter(self, endpoint: str) -> float | None:
        """Take a place in `endpoint`'s lane, waiting for one if the wait should be
        short; the monotonic time the place was taken (give it to `leave`), or None
        if the delivery is turned away."""
        lane = self._lanes.setdefault(endpoint, _Lane())
        now = time.monotonic()
        if len(lane.started) < self.width and not lane.waiting:
            lane.started.append(now)
            return now
        expected_s = lane.duration_s(now) * (len(lane.waiting) + 1) / self.width
        if expected_s > self.max_wait_s:
            return None
        place: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        lane.waiting.append(place)
        try:
            async with asyncio.timeout(self.max_wait_s * 2):
                # `leave` hands the place over with its start time, already recorded.
                return await asyncio.shield(place)
        except TimeoutError:
            if place.done():  # handed over just as the wait ran out
                return place.result()
            lane.waiting.remove(place)
            place.cancel()
            return None
        except asyncio.CancelledError:
            if place.done():
                self.leave(endpoint, place.result())
            else:
                lane.waiting.remove(place)
                place.cancel()
            raise

    def leave(self, endpoint: str, started: float) -> None:
        """Give back the place taken at `started` (by `enter`): to the first delivery
        waiting for it, if any."""
        lane = self._lanes[endpoint]
        now = time.monotonic()
        lane.started.remove(started)
        lane.mean_duration_s += SMOOTHING * (now - started - lane.mean_duration_s)
        while lane.waiting:
            place = lane.waiting.popleft()
            if not place.done():
                lane.started.append(now)
                place.set_result(now)
                return
        if not lane.started and len(self._lanes) > MAX_IDLE_LANES:
            self._forget_idle(now)

    def book_turn_s(self, endpoint: str) -> float:
        """For a delivery that `enter` turned away: in how many seconds to come back."""
        lane = self._lanes[endpoint]
        now = time.monotonic()
        step = max(MIN_TURN_S, lane.duration_s(now) / self.width)
        lane.next_turn_at = min(max(lane.next_turn_at, now) + step, now + TURN_HORIZON_S)
        return lane.next_turn_at - now

    def duration_s(self, endpoint: str) -> float:
        """How long an attempt to `endpoint` takes, as this process has seen (0 if
        never)."""
        lane = self._lanes.get(endpoint)
        return 0.0 if lane is None else lane.duration_s(time.monotonic())

    def in_flight(self, endpoint: str) -> int:
        lane = self._lanes.get(endpoint)
        return 0 if lane is None else len(lane.started)

    def waiting(self, endpoint: str) -> int:
        lane = self._lanes.get(endpoint)
        return 0 if lane is None else len(lane.waiting)

    def _forget_idle(self, now: float) -> None:
        for endpoint, lane in list(self._lanes.items()):
            if not lane.started and not lane.waiting and lane.next_turn_at <= now:
                del self._lanes[endpoint]
