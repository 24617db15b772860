"""`add_event`: an outbox row written in the caller's transaction, on both backends."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from core.clock import utcnow
from core.database import Database
from outbox.writer import add_event
from tests.outbox.helpers import new_client_id, outbox_rows


class Abort(Exception):
    pass


async def test_the_row_carries_the_event(db: Database) -> None:
    client_id = await new_client_id(db)
    before = utcnow()

    async with db.transaction():
        event_id = await add_event(
            db, client_id=client_id, event_type="survey_created", content={"id": "s1", "n": [1]}
        )

    [row] = await outbox_rows(db, client_id)
    assert uuid.UUID(event_id)
    assert row["event_id"] == event_id
    assert row["event_type"] == "survey_created"
    assert row["content"] == {"id": "s1", "n": [1]}
    assert row["dispatched_at"] is None
    assert before - timedelta(seconds=1) <= row["created_at"] <= utcnow()
    assert isinstance(row["seq"], int)


async def test_rows_are_ordered_by_seq(db: Database) -> None:
    client_id = await new_client_id(db)
    ids = [
        await add_event(db, client_id=client_id, event_type="survey_created", content={"n": n})
        for n in range(3)
    ]

    rows = await outbox_rows(db, client_id)

    assert [row["event_id"] for row in rows] == ids
    assert [row["content"]["n"] for row in rows] == [0, 1, 2]


async def test_the_row_rolls_back_with_the_callers_transaction(db: Database) -> None:
    client_id = await new_client_id(db)

    with pytest.raises(Abort):
        async with db.transaction():
            await add_event(db, client_id=client_id, event_type="survey_created", content={})
            raise Abort

    assert await outbox_rows(db, client_id) == []


async def test_an_explicit_rollback_drops_the_row(db: Database) -> None:
    client_id = await new_client_id(db)

    transaction = await db.transaction()
    await add_event(db, client_id=client_id, event_type="survey_finished", content={})
    await transaction.rollback()

    assert await outbox_rows(db, client_id) == []
