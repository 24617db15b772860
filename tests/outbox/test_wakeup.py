"""`RedisWakeup.notify`: every commit's notify is followed by a publish, and notifies made
while one is on its way, or soon after it, share the next."""

from __future__ import annotations

import asyncio

import pytest

from outbox import wakeup as wakeup_module
from outbox.wakeup import RedisWakeup
from tests.servers import free_port


async def test_notifies_during_a_publish_share_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a publish that is on its way until released (and no spacing between publishes)
    monkeypatch.setattr(wakeup_module, "MIN_PUBLISH_INTERVAL_S", 0.0)
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


async def test_notifies_soon_after_a_publish_share_the_next_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given publishes at least 0.2 s apart, each recorded with its time
    monkeypatch.setattr(wakeup_module, "MIN_PUBLISH_INTERVAL_S", 0.2)
    wakeup = RedisWakeup(f"redis://127.0.0.1:{free_port()}/0")
    loop = asyncio.get_running_loop()
    published: list[float] = []

    async def publish() -> None:
        published.append(loop.time())

    monkeypatch.setattr(wakeup, "_publish", publish)
    try:
        # When one commit notifies, and three more within the interval
        notified_at = loop.time()
        wakeup.notify()
        for _ in range(3):
            await asyncio.sleep(0.01)
            wakeup.notify()
        await asyncio.gather(*wakeup._pending)

        # Then the first is published at once, and one more covers the other three, at
        # the end of the interval
        assert len(published) == 2
        assert published[0] - notified_at < 0.1
        assert published[1] - published[0] >= 0.2
    finally:
        await wakeup.close()
