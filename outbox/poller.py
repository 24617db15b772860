"""The poller: moves outbox events into deliveries and hands them to the queue.

Each round: fan out batches until the outbox is empty, then (at most every
`sweep_interval_s`) sweep stranded deliveries and (every `prune_interval_s`, when
`retention_s` is set) prune what is older than the retention, then sleep until woken or until the
poll interval passes. Enqueueing happens after the fan-out commits: if the process dies
in between, the deliveries are in the database and the sweep sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from core.clock import utcnow
from core.database import Database
from core.lifecycle import Pruned, prune, sweep_stranded
from core.outages import is_outage
from outbox.fanout import fan_out_batch
from outbox.wakeup import Wakeup

logger = logging.getLogger("webhooks.poller")

Enqueue = Callable[[Sequence[str]], None]
"""Sends delivery ids to the queue; blocking (Dramatiq's brokers are), run in a thread."""

DEFAULT_BATCH_SIZE = 500
# Rounds start at most this often: under load each one takes the events of a few
# commits (a round costs about the same for one event as for twenty), at the price of
# this much latency for an event that arrives right after a round started.
MIN_ROUND_INTERVAL_S = 0.020
MIN_ERROR_PAUSE_S = 0.1
MAX_ERROR_PAUSE_S = 2.0


class Poller:
    def __init__(
        self,
        db: Database,
        enqueue: Enqueue,
        wakeup: Wakeup,
        *,
        poll_interval_s: float,
        sweep_grace_s: float,
        sweep_interval_s: float = 1.0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        retention_s: float = 0,
        prune_interval_s: float = 3600,
    ) -> None:
        self.db = db
        self.enqueue = enqueue
        self.wakeup = wakeup
        self.poll_interval_s = poll_interval_s
        self.sweep_grace_s = sweep_grace_s
        self.sweep_interval_s = sweep_interval_s
        self.batch_size = batch_size
        self.retention_s = retention_s
        self.prune_interval_s = prune_interval_s
        self._last_sweep = 0.0
        self._last_prune = time.monotonic()

    async def dispatch(self) -> int:
        """Fan out and enqueue until the outbox is empty; returns the events handled."""
        handled = 0
        while True:
            fanout = await fan_out_batch(self.db, batch_size=self.batch_size)
            if fanout.pending_ids:
                await asyncio.to_thread(self.enqueue, fanout.pending_ids)
            handled += fanout.events
            if fanout.events < self.batch_size:
                return handled

    async def sweep(self, *, grace_s: float | None = None) -> int:
        """Re-enqueue the stranded deliveries: due for longer than `grace_s` (by default
        the poller's `sweep_grace_s`) with no live lease. Returns how many."""
        grace_s = self.sweep_grace_s if grace_s is None else grace_s
        stranded = await sweep_stranded(self.db, grace_s=grace_s)
        if stranded:
            logger.warning("re-enqueueing %d stranded deliveries", len(stranded))
            await asyncio.to_thread(self.enqueue, stranded)
        return len(stranded)

    async def prune(self) -> Pruned:
        pruned = await prune(self.db, older_than=timedelta(seconds=self.retention_s), now=utcnow())
        if pruned.deliveries or pruned.outbox:
            logger.info(
                "pruned %d deliveries, %d attempts, %d outbox rows",
                pruned.deliveries,
                pruned.attempts,
                pruned.outbox,
            )
        return pruned

    async def run_once(self) -> None:
        await self.dispatch()
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_interval_s:
            self._last_sweep = now
            await self.sweep()
        if self.retention_s and now - self._last_prune >= self.prune_interval_s:
            self._last_prune = now
            await self.prune()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set. A round that fails is logged and tried again after a
        pause that doubles while rounds keep failing (an outage), up to
        `MAX_ERROR_PAUSE_S`.

        Each round runs in a task of its own: `databases` binds a connection to the task
        that uses it, and one whose server went away while a transaction was open stays
        bound, closed, to that task; a new task per round starts with a new one."""
        pause_s = MIN_ERROR_PAUSE_S
        started = 0.0
        while not stop.is_set():
            await asyncio.sleep(max(0.0, started + MIN_ROUND_INTERVAL_S - time.monotonic()))
            started = time.monotonic()
            try:
                await asyncio.create_task(self.run_once())
            except Exception as exc:
                level = logging.WARNING if is_outage(exc) else logging.ERROR
                logger.log(level, "poll round failed: %s: %s", type(exc).__name__, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause_s)
                pause_s = min(pause_s * 2, MAX_ERROR_PAUSE_S)
                continue
            pause_s = MIN_ERROR_PAUSE_S
            await self.wakeup.wait(self.poll_interval_s)
