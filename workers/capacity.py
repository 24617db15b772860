"""How many deliveries a worker process has in flight (`WEBHOOKS_WORKER_CONCURRENCY`).

A batch takes the slots it needs all at once, BEFORE it claims anything: no lease runs
out while it waits, and two batches never each hold part of what they need and wait for
the rest. Each slot is given back as soon as its delivery's request is done, so a slow
endpoint holds one slot, not its whole batch's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Capacity:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._free = slots
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, count: int) -> AsyncIterator[Held]:
        """Wait for `count` (at most `slots`) free slots and hold them; what was not
        given back early is given back on leaving."""
        if not 0 < count <= self.slots:
            raise ValueError(f"a batch takes 1 to {self.slots} slots, not {count}")
        async with self._changed:
            await self._changed.wait_for(lambda: self._free >= count)
            self._free -= count
        held = Held(self, count)
        try:
            yield held
        finally:
            await held.give(held.count)

    async def free(self, count: int) -> None:
        """Make `count` held slots free again (`Held.give` calls it)."""
        async with self._changed:
            self._free += count
            self._changed.notify_all()


class Held:
    """Slots a batch holds."""

    def __init__(self, capacity: Capacity, count: int) -> None:
        self._capacity = capacity
        self.count = count

    async def give(self, count: int = 1) -> None:
        count = min(count, self.count)
        if count > 0:
            self.count -= count
            await self._capacity.free(count)
