"""Helpers shared by the outbox, worker and delivery-audit tests: rows made directly
through the code under test (clients, configurations, events, deliveries), readers for
what the tests assert on, isolated databases, and polling with a deadline."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core import configs
from core.clients import create_client
from core.clock import utcnow
from core.database import Database, Query, WriteUnit, open_database, record_dict
from core.events import event_body
from core.lifecycle import delivery_row, insert_deliveries
from core.migrate import upgrade
from core.signing_keys import SignatureScheme
from core.tables import attempts, deliveries, metadata, outbox, surveys, webhook_configs
from outbox.writer import add_event
from tests.servers import postgres_database

RECEIVER_URL = "https://receiver.example/hooks"
TOKEN = "receiver-token-0123456789"
ALL_EVENTS = ("survey_created", "survey_finished")


@contextmanager
def isolated_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of the same backend as `database_url`, for a test that
    asserts on every row of a table (the sweep, the poller, the concurrent fan-out)."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'isolated.db'}"
        upgrade(url)
        yield url
        return
    with postgres_database() as url:
        upgrade(url)
        yield url


async def new_client_id(db: Database) -> str:
    return str((await create_client(db, "outbox test client"))["id"])


async def new_config(
    db: Database,
    client_id: str,
    *,
    events: Sequence[str] = ALL_EVENTS,
    url: str = RECEIVER_URL,
    enabled: bool = True,
    signature_scheme: SignatureScheme = SignatureScheme.V1,
) -> dict[str, Any]:
    config = await configs.create_config(
        db,
        client_id,
        url=url,
        subscribed_events=events,
        authorization_token=TOKEN,
        signature_scheme=signature_scheme,
    )
    if not enabled:
        await disable_config(db, config["id"])
        config = {**config, "enabled": False, "disabled_reason": "failing"}
    return config


async def disable_config(db: Database, config_id: str) -> None:
    """Disable a configuration as the endpoint-health rules do (SPEC 9)."""
    await db.execute(
        webhook_configs.update()
        .where(webhook_configs.c.id == config_id)
        .values(enabled=False, disabled_reason="failing")
    )


async def add_events(db: Database, client_id: str, event_type: str, count: int) -> list[str]:
    """`count` events of one type, each committed on its own; returns their ids."""
    event_ids = []
    for number in range(count):
        async with db.transaction():
            event_ids.append(
                await add_event(
                    db, client_id=client_id, event_type=event_type, content={"n": number}
                )
            )
    return event_ids


async def new_delivery(
    db: Database,
    config: dict[str, Any],
    *,
    status: str = "pending",
    created_at: datetime | None = None,
    event_type: str = "survey_created",
    content: dict[str, Any] | None = None,
    **columns: Any,
) -> str:
    """A delivery of a new event to `config`, as the fan-out makes it, then `columns`
    (and `status`) written over it."""
    now = created_at or utcnow()
    row = delivery_row(
        config_id=config["id"],
        client_id=config["client_id"],
        event_id=str(uuid.uuid4()),
        event_type=event_type,
        body=event_body(event_type, content or {}),
        enabled=True,
        now=now,
        seq=columns.pop("seq", None),
    )
    await insert_deliveries(db, [row])
    delivery_id = str(row["id"])
    changes = {"status": status, **columns}
    if status != "pending" and "next_attempt_at" not in columns:
        changes["next_attempt_at"] = None
    await db.execute(deliveries.update().where(deliveries.c.id == delivery_id).values(**changes))
    return delivery_id


async def delivery(db: Database, delivery_id: str) -> dict[str, Any]:
    row = await db.fetch_one(sa.select(deliveries).where(deliveries.c.id == delivery_id))
    assert row is not None, delivery_id
    return record_dict(row)


async def deliveries_of(db: Database, **where: Any) -> list[dict[str, Any]]:
    conditions = [deliveries.c[name] == value for name, value in where.items()]
    rows = await db.fetch_all(
        sa.select(deliveries).where(*conditions).order_by(deliveries.c.created_at)
    )
    return [record_dict(row) for row in rows]


async def attempts_of(db: Database, delivery_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch_all(
        sa.select(attempts).where(attempts.c.delivery_id == delivery_id).order_by(attempts.c.number)
    )
    return [record_dict(row) for row in rows]


async def outbox_rows(db: Database, client_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch_all(
        sa.select(outbox).where(outbox.c.client_id == client_id).order_by(outbox.c.seq)
    )
    return [record_dict(row) for row in rows]


async def survey_rows(db: Database, client_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch_all(sa.select(surveys).where(surveys.c.client_id == client_id))
    return [record_dict(row) for row in rows]


async def make_due(db: Database, delivery_id: str) -> None:
    """Bring the next attempt forward to now, as if the back-off had elapsed."""
    await db.execute(
        deliveries.update().where(deliveries.c.id == delivery_id).values(next_attempt_at=utcnow())
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float = 10.0, every_s: float = 0.02
) -> None:
    """Wait until `check()` is true; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(every_s)


async def connected(url: str, *, pool_size: int = 5) -> Database:
    database = open_database(url, pool_size=pool_size)
    await database.connect()
    return database


def meanwhile_in_unit(
    loop: asyncio.AbstractEventLoop, dialect: str, meanwhile: Callable[[], Awaitable[None]]
) -> WriteUnit[None]:
    """In a write unit (`yield from`): `meanwhile()` runs on `loop` to its end while the
    unit waits, inside its transaction. On SQLite the unit runs on the writer's thread
    and blocks it; on PostgreSQL it runs on the loop, and the server sleeps for it."""
    done = threading.Event()

    async def run() -> None:
        try:
            await meanwhile()
        finally:
            done.set()

    tasks: list[asyncio.Task[None]] = []
    loop.call_soon_threadsafe(lambda: tasks.append(loop.create_task(run())))
    if dialect == "postgresql":
        while not done.is_set():
            yield Query(sa.select(sa.func.pg_sleep(0.05).label("slept")))
    else:
        assert done.wait(timeout=30), "meanwhile() did not end"


def then(unit: WriteUnit[Any], rows: list[Any]) -> WriteUnit[Any]:
    """In a write unit (`yield from`): the rest of `unit`, sent `rows` first."""
    while True:
        try:
            query = unit.send(rows)
        except StopIteration as stop:
            return stop.value
        rows = yield query


async def where_found(db: Database, *needles: str) -> list[str]:
    """`table.column` of every text or JSON value, in every row of every table, that
    contains one of `needles`."""
    found = []
    for table in metadata.sorted_tables:
        for row in await db.fetch_all(sa.select(table)):
            for column, value in record_dict(row).items():
                text = value if isinstance(value, str) else json.dumps(value, default=str)
                if any(needle in text for needle in needles):
                    found.append(f"{table.name}.{column}")
    return found
