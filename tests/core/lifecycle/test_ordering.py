"""`ordering: "fifo"` as the claim's rule (both backends): only a fifo configuration's
head can be claimed, a head waiting for its retry holds the rest back, a delivered or
failed head hands over to the next, and an earlier event still in the outbox holds back
later deliveries of its client."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from core import configs, lifecycle
from core.clock import utcnow
from core.database import Database
from core.lifecycle import AttemptRecord, Claim, Health, Result, Status
from core.tables import outbox
from outbox.fanout import fan_out_batch
from outbox.writer import add_event
from tests.outbox.helpers import TOKEN, delivery, new_client_id, new_delivery

LEASE_S = 30.0


async def _config(db: Database, client_id: str, ordering: str) -> dict[str, Any]:
    return await configs.create_config(
        db,
        client_id,
        url="https://receiver.example/hooks",
        subscribed_events=["survey_created"],
        authorization_token=TOKEN,
        controls={"ordering": ordering},
    )


async def _deliveries(db: Database, config: dict[str, Any], seqs: list[int]) -> list[str]:
    return [await new_delivery(db, config, seq=seq) for seq in seqs]


async def _record(db: Database, claim: Claim, status: Status, *, retry_in_s: float = 0) -> None:
    now = utcnow()
    attempt = AttemptRecord(
        started_at=now, duration_ms=5, status_code=500, error="http_status", response_body=""
    )
    due = now + timedelta(seconds=retry_in_s) if status == Status.PENDING else None
    result = Result(
        claim=claim, attempt=attempt, status=status, next_attempt_at=due, health=Health.OK
    )
    await lifecycle.record(db, [result], disable_after_s=3600)
    # A `failed` one writes its `delivery_failed` event: the poller fans it out, so that
    # it holds back no later delivery of the client (the fifo rule waits for the outbox).
    while (await fan_out_batch(db, batch_size=100)).events:
        pass


async def _claim(db: Database, ids: list[str]) -> list[str]:
    return [claim.delivery_id for claim in await lifecycle.claim(db, ids, lease_s=LEASE_S)]


async def test_only_the_head_of_a_fifo_configuration_is_claimed(db: Database) -> None:
    config = await _config(db, await new_client_id(db), "fifo")
    first, second, third = await _deliveries(db, config, [30, 10, 20])

    claimed = await _claim(db, [first, second, third])
    waiting = await lifecycle.mark_waiting_in_order(db, [first, third], due_by=utcnow())

    assert claimed == [second]
    assert sorted(waiting) == sorted([first, third])
    assert (await delivery(db, third))["waiting_reason"] == "ordering"


async def test_without_ordering_every_delivery_is_claimed_at_once(db: Database) -> None:
    config = await _config(db, await new_client_id(db), "none")
    ids = await _deliveries(db, config, [3, 1, 2])

    assert sorted(await _claim(db, ids)) == sorted(ids)
    assert await lifecycle.mark_waiting_in_order(db, ids, due_by=utcnow()) == []


async def test_a_head_waiting_for_its_retry_holds_back_the_rest(db: Database) -> None:
    config = await _config(db, await new_client_id(db), "fifo")
    head, behind = await _deliveries(db, config, [1, 2])
    [claim] = await lifecycle.claim(db, [head], lease_s=LEASE_S)

    await _record(db, claim, Status.PENDING, retry_in_s=60)

    assert await _claim(db, [behind]) == []
    assert await lifecycle.next_in_order(db, [config["id"]]) == []


async def test_a_delivered_or_failed_head_hands_over_to_the_next(db: Database) -> None:
    config = await _config(db, await new_client_id(db), "fifo")
    first, second, third = await _deliveries(db, config, [1, 2, 3])

    [claim] = await lifecycle.claim(db, [first], lease_s=LEASE_S)

    for status, following in ((Status.DELIVERED, second), (Status.FAILED, third)):
        await _record(db, claim, status)

        assert await lifecycle.next_in_order(db, [config["id"]]) == [following]
        [claim] = await lifecycle.claim(db, [following], lease_s=LEASE_S)
        assert (await delivery(db, following))["waiting_reason"] is None


async def test_a_head_handed_over_is_due_from_then(db: Database) -> None:
    # Given a fifo configuration with two deliveries, due since they were made
    config = await _config(db, await new_client_id(db), "fifo")
    first, second = await _deliveries(db, config, [1, 2])
    made = (await delivery(db, second))["next_attempt_at"]
    [claim] = await lifecycle.claim(db, [first], lease_s=LEASE_S)
    await _record(db, claim, Status.DELIVERED)

    # When the first is delivered and the second handed over
    before = utcnow()
    assert await lifecycle.next_in_order(db, [config["id"]]) == [second]

    # Then the second is due from the hand-over, when its message joins the queue (the
    # sweep reads the queue's place from the due times of deliveries in flight)
    assert (await delivery(db, second))["next_attempt_at"] >= before > made


async def test_an_earlier_event_not_yet_fanned_out_holds_back_a_later_delivery(
    db: Database,
) -> None:
    client_id = await new_client_id(db)
    config = await _config(db, client_id, "fifo")
    async with db.transaction():
        await add_event(db, client_id=client_id, event_type="survey_created", content={})
    earlier = await db.fetch_val(
        sa.select(sa.func.max(outbox.c.seq)).where(outbox.c.client_id == client_id)
    )
    [later] = await _deliveries(db, config, [earlier + 1])

    held_back = await _claim(db, [later])
    await db.execute(
        outbox.update().where(outbox.c.client_id == client_id).values(dispatched_at=utcnow())
    )

    assert held_back == []
    assert await _claim(db, [later]) == [later]
