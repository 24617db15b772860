"""`rate_limit_per_s` and `max_in_flight` of a configuration (SPEC 13), across workers.

Before an attempt, a worker asks for a permit: granted, the attempt starts at once (and
gives the permit back when it ends); refused, the delivery is released unattempted, not
charged, and comes back at the turn the refusal names, so no worker slot sits waiting.

- Rate: the start times of the last second's attempts, a sliding window (not fixed
  one-second buckets, which let twice the rate through across a boundary), a little
  longer than a second (`WINDOW_MARGIN_MS`), so that attempts that start a moment after
  their permit still keep to the rate as a receiver counts them.
- In flight: the permits held, each expiring with the delivery's lease, so the permit of
  a worker that was killed mid-request frees itself when its lease runs out.
- Turns: like the lanes' (`workers.lanes`), each refusal books the next turn, one step
  (a rate interval, or an attempt's duration over the in-flight cap) after the previous
  one, and never beyond `TURN_HORIZON_S`: a backlog comes back spread out, not at once.

`RedisLimiter` keeps all of it in Redis, checked and taken in one Lua script (atomic,
on Redis's clock), shared by every worker process; `LocalLimiter` keeps it in the
process, for `webhooks serve`, which has no Redis and one worker process.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.controls import WaitingReason

logger = logging.getLogger("webhooks.worker")

WINDOW_MS = 1000
WINDOW_MARGIN_MS = 50
TURN_HORIZON_S = 10.0
# How soon a delivery comes back when Redis could not be asked.
UNAVAILABLE_RETRY_S = 1.0


@dataclass(frozen=True)
class Limits:
    """A configuration's limits and what a permit needs: how long it may be held (the
    lease) and the step between two turns."""

    rate_per_s: int | None
    max_in_flight: int | None
    hold_s: float
    step_s: float


@dataclass(frozen=True)
class Refused:
    reason: WaitingReason
    retry_in_s: float


class Limiter(Protocol):
    async def acquire(self, config_id: str, limits: Limits) -> str | Refused:
        """A permit (give it to `release`), or why and for how long to wait."""
        ...

    async def release(self, config_id: str, permit: str) -> None: ...

    async def aclose(self) -> None: ...


@dataclass
class _Local:
    starts: deque[float] = field(default_factory=deque)
    held: dict[str, float] = field(default_factory=dict)  # permit -> expiry
    next_turn_at: float = 0.0


class LocalLimiter:
    """The limits of one process (on its event loop: no locks)."""

    def __init__(self) -> None:
        self._configs: dict[str, _Local] = {}

    async def acquire(self, config_id: str, limits: Limits) -> str | Refused:
        state = self._configs.setdefault(config_id, _Local())
        now = time.monotonic()
        refused = _local_refusal(state, limits, now)
        if refused is not None:
            reason, wait_s = refused
            turn = min(max(state.next_turn_at + limits.step_s, now + wait_s), now + TURN_HORIZON_S)
            state.next_turn_at = turn
            return Refused(reason, turn - now)
        permit = uuid.uuid4().hex
        if limits.max_in_flight is not None:
            state.held[permit] = now + limits.hold_s
        if limits.rate_per_s is not None:
            state.starts.append(now)
        return permit

    async def release(self, config_id: str, permit: str) -> None:
        state = self._configs.get(config_id)
        if state is not None:
            state.held.pop(permit, None)

    async def aclose(self) -> None:
        self._configs.clear()


def _local_refusal(state: _Local, limits: Limits, now: float) -> tuple[WaitingReason, float] | None:
    if limits.max_in_flight is not None:
        for permit in [p for p, expiry in state.held.items() if expiry <= now]:
            del state.held[permit]
        if len(state.held) >= limits.max_in_flight:
            return WaitingReason.MAX_IN_FLIGHT, 0.0
    if limits.rate_per_s is not None:
        window_s = (WINDOW_MS + WINDOW_MARGIN_MS) / 1000
        while state.starts and state.starts[0] <= now - window_s:
            state.starts.popleft()
        if len(state.starts) >= limits.rate_per_s:
            return WaitingReason.RATE_LIMITED, state.starts[0] + window_s - now
    return None


# KEYS: starts (zset), held permits (zset), next turn. ARGV: rate (0: none), in-flight cap
# (0: none), permit, hold_ms, window_ms, step_ms, horizon_ms. Returns {"ok", 0} or
# {reason, wait_ms}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local hold, window = tonumber(ARGV[4]), tonumber(ARGV[5])
local step, horizon = tonumber(ARGV[6]), tonumber(ARGV[7])
local reason, wait = nil, 0
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= cap then reason = 'max_in_flight' end
end
if not reason and rate > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rate then
    reason = 'rate_limited'
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    wait = tonumber(oldest[2]) + window - now
  end
end
if reason then
  local turn = tonumber(redis.call('GET', KEYS[3]) or '0')
  turn = math.min(math.max(turn + step, now + wait), now + horizon)
  redis.call('SET', KEYS[3], turn, 'PX', horizon + window)
  return {reason, turn - now}
end
if cap > 0 then
  redis.call('ZADD', KEYS[2], now + hold, ARGV[3])
  redis.call('PEXPIRE', KEYS[2], hold + window)
end
if rate > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window * 2)
end
return {'ok', 0}
"""


class RedisLimiter:
    """The limits shared by every worker process of one Redis."""

    def __init__(self, redis_url: str) -> None:
        self._redis = aioredis.Redis.from_url(redis_url, socket_timeout=5)
        self._acquire = self._redis.register_script(_ACQUIRE)

    @staticmethod
    def _keys(config_id: str) -> list[str]:
        # One hash tag per configuration: a Redis Cluster keeps its keys on one node.
        prefix = f"webhooks:limits:{{{config_id}}}"
        return [f"{prefix}:starts", f"{prefix}:held", f"{prefix}:turn"]

    async def acquire(self, config_id: str, limits: Limits) -> str | Refused:
        permit = uuid.uuid4().hex
        args: list[str | int] = [
            limits.rate_per_s or 0,
            limits.max_in_flight or 0,
            permit,
            int(limits.hold_s * 1000),
            WINDOW_MS + WINDOW_MARGIN_MS,
            max(1, int(limits.step_s * 1000)),
            int(TURN_HORIZON_S * 1000),
        ]
        try:
            verdict, wait_ms = await self._acquire(keys=self._keys(config_id), args=args)
        except RedisError as exc:
            logger.warning("limits unavailable, delivery deferred: %s", type(exc).__name__)
            reason = WaitingReason.RATE_LIMITED
            if limits.max_in_flight is not None:
                reason = WaitingReason.MAX_IN_FLIGHT
            return Refused(reason, UNAVAILABLE_RETRY_S)
        verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        if verdict == "ok":
            return permit
        return Refused(WaitingReason(verdict), max(0, int(wait_ms)) / 1000)

    async def release(self, config_id: str, permit: str) -> None:
        try:
            await self._redis.zrem(self._keys(config_id)[1], permit)
        except RedisError as exc:  # the permit expires with the lease
            logger.warning("permit not given back: %s", type(exc).__name__)

    async def aclose(self) -> None:
        await self._redis.aclose()


def create_limiter(redis_url: str | None) -> Limiter:
    """Shared through Redis when there is one; in the process otherwise (`serve`)."""
    return RedisLimiter(redis_url) if redis_url else LocalLimiter()
