"""`RedisWakeup.notify`: every commit's notify is followed by a publish, and notifies made
while one is on its way share the next."""

from __future__ import annotations

import asyncio

import pytest

from outbox.wakeup import RedisWakeup
from tests.servers import free_port


async def test_notifies_during_a_publish_share_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a publish that is on its way until released
    wakeup = RedisWakeup(f"redis://127.0.0.1:{free_port()}/0")
    published: list[int] = []
    released = asyncio.Event()

    async def publish() -> None:
        published.append(len(published))
        await released.wait()

    monkeypatch.setattr(wakeup, "_publish", publish)
    try:
        wakeup.notify()
        await asyncio.sleep(0)
        assert published == [0]

        # When three more commits notify meanwhile
        for _ in range(3):
            wakeup.notify()
        released.set()
        await asyncio.gather(*wakeup._pending)

        # Then one more publish covers them
        assert published == [0, 1]
        # and a notify after a quiet spell is published at once
        wakeup.notify()
        await asyncio.gather(*wakeup._pending)
        assert published == [0, 1, 2]
    finally:
        await wakeup.close()
