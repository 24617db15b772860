"""Retention (SPEC 10): `prune` removes delivered and failed deliveries older than the
cutoff with their attempts, and dispatched outbox rows older than it, in batches; the
poller prunes on its own; `webhooks prune --older-than DURATION`. Both backends, each
test on a database of its own (prune is global: its counts are exact only there)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from core.database import Database, WriteUnit, open_database
from core.tables import attempts, deliveries, outbox
from outbox import retention
from outbox.poller import Poller
from outbox.retention import Pruned, parse_duration_s, prune
from outbox.wakeup import LocalWakeup
from service.deliveries import redeliver
from tests.outbox.helpers import (
    attempts_of,
    deliveries_of,
    meanwhile_in_unit,
    new_client_id,
    new_config,
    new_delivery,
    then,
)
from tests.service.processes import process_env, run_webhooks

NOW = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
OLDER_THAN = timedelta(days=30)
CUTOFF = NOW - OLDER_THAN
OLD = CUTOFF - timedelta(seconds=1)
NEW = CUTOFF + timedelta(seconds=1)


async def _config(db: Database) -> dict[str, Any]:
    return await new_config(db, await new_client_id(db))


async def _final_delivery(
    db: Database, config: dict[str, Any], status: str, at: datetime, *, tries: int = 2
) -> str:
    """A delivery that ended (`delivered` or `failed`) at `at`, after `tries` attempts."""
    delivery_id = await new_delivery(
        db,
        config,
        status=status,
        created_at=at - timedelta(hours=1),
        attempt_count=tries,
        last_attempt_at=at,
        delivered_at=at if status == "delivered" else None,
    )
    for number in range(1, tries + 1):
        await db.execute(
            attempts.insert().values(
                delivery_id=delivery_id,
                number=number,
                started_at=at - timedelta(minutes=tries - number),
                duration_ms=12,
                status_code=200 if status == "delivered" and number == tries else 500,
                error=None if status == "delivered" and number == tries else "http_status",
                response_body="ok",
            )
        )
    return delivery_id


async def _outbox_row(db: Database, client_id: str, at: datetime, *, dispatched: bool) -> str:
    event_id = str(uuid.uuid4())
    await db.execute(
        outbox.insert().values(
            event_id=event_id,
            client_id=client_id,
            event_type="survey_created",
            content={"id": event_id},
            created_at=at,
            dispatched_at=at + timedelta(seconds=1) if dispatched else None,
        )
    )
    return event_id


async def _delivery_ids(db: Database) -> set[str]:
    return {str(row[0]) for row in await db.fetch_all(sa.select(deliveries.c.id))}


async def _outbox_event_ids(db: Database) -> set[str]:
    return {str(row[0]) for row in await db.fetch_all(sa.select(outbox.c.event_id))}


async def _count(db: Database, table: sa.Table) -> int:
    return int(await db.fetch_val(sa.select(sa.func.count()).select_from(table)))


# --- what prune removes and what it keeps -----------------------------------------------


async def test_prune_removes_old_final_deliveries_with_their_attempts_and_keeps_the_rest(
    idb: Database,
) -> None:
    # Given old and new deliveries in every status, and old and new outbox rows
    db = idb
    config = await _config(db)
    old_delivered = await _final_delivery(db, config, "delivered", OLD)
    old_failed = await _final_delivery(db, config, "failed", OLD, tries=3)
    new_delivered = await _final_delivery(db, config, "delivered", NEW)
    new_failed = await _final_delivery(db, config, "failed", NEW)
    old_pending = await new_delivery(db, config, created_at=OLD - timedelta(days=300))
    old_held = await new_delivery(db, config, status="held", created_at=OLD - timedelta(days=1))
    old_cancelled = await new_delivery(db, config, status="cancelled", created_at=OLD)
    # A delivery created long ago whose last attempt is recent is not old.
    retried_lately = await new_delivery(
        db,
        config,
        status="failed",
        created_at=OLD - timedelta(days=100),
        last_attempt_at=NEW,
        attempt_count=1,
    )
    old_dispatched = await _outbox_row(db, config["client_id"], OLD, dispatched=True)
    old_undispatched = await _outbox_row(db, config["client_id"], OLD, dispatched=False)
    new_dispatched = await _outbox_row(db, config["client_id"], NEW, dispatched=True)

    # When deliveries and events older than 30 days are pruned
    pruned = await prune(db, older_than=OLDER_THAN, now=NOW)

    # Then the old delivered and failed ones go with their 5 attempts, and one outbox row
    assert pruned == Pruned(deliveries=2, attempts=5, outbox=1)
    assert await _delivery_ids(db) == {
        new_delivered,
        new_failed,
        old_pending,
        old_held,
        old_cancelled,
        retried_lately,
    }
    assert await attempts_of(db, old_delivered) == []
    assert await attempts_of(db, old_failed) == []
    assert len(await attempts_of(db, new_delivered)) == 2
    assert await _outbox_event_ids(db) == {old_undispatched, new_dispatched}
    assert old_dispatched not in await _outbox_event_ids(db)


async def test_prune_of_an_empty_database_removes_nothing(idb: Database) -> None:
    assert await prune(idb, older_than=timedelta(0), now=NOW) == Pruned(0, 0, 0)


async def test_a_second_prune_finds_nothing_more(idb: Database) -> None:
    config = await _config(idb)
    await _final_delivery(idb, config, "delivered", OLD)
    await _outbox_row(idb, config["client_id"], OLD, dispatched=True)

    assert await prune(idb, older_than=OLDER_THAN, now=NOW) == Pruned(1, 2, 1)
    assert await prune(idb, older_than=OLDER_THAN, now=NOW) == Pruned(0, 0, 0)


async def test_more_rows_than_one_batch_are_all_removed(
    idb: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch of 4 and 2.5 batches of old deliveries (plus an exact multiple of
    # outbox rows, where a full last batch must not stop the loop early)
    monkeypatch.setattr(retention, "PRUNE_BATCH", 4)
    db = idb
    config = await _config(db)
    for _ in range(10):
        await _final_delivery(db, config, "delivered", OLD, tries=1)
    keep = await _final_delivery(db, config, "delivered", NEW, tries=1)
    for _ in range(8):
        await _outbox_row(db, config["client_id"], OLD, dispatched=True)
    pending_event = await _outbox_row(db, config["client_id"], OLD, dispatched=False)

    pruned = await prune(db, older_than=OLDER_THAN, now=NOW)

    assert pruned == Pruned(deliveries=10, attempts=10, outbox=8)
    assert await _delivery_ids(db) == {keep}
    assert await _outbox_event_ids(db) == {pending_event}
    assert await _count(db, attempts) == 1


async def test_each_batch_is_its_own_transaction(
    idb: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fails leaves the batches before it pruned and nothing half-done."""
    monkeypatch.setattr(retention, "PRUNE_BATCH", 3)
    db = idb
    config = await _config(db)
    for _ in range(7):
        await _final_delivery(db, config, "failed", OLD, tries=2)
    real = retention._prune_deliveries_batch
    calls = 0

    async def fails_on_the_second(database: Database, cutoff: datetime) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("database went away")
        return await real(database, cutoff)

    monkeypatch.setattr(retention, "_prune_deliveries_batch", fails_on_the_second)

    with pytest.raises(ConnectionError):
        await prune(db, older_than=OLDER_THAN, now=NOW)

    assert len(await deliveries_of(db, config_id=config["id"])) == 4
    assert await _count(db, attempts) == 8


async def test_a_redelivery_that_commits_while_prune_runs_is_not_deleted(
    idb: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`redeliver` makes a failed delivery pending again; if that commits between prune
    reading the batch's ids and deleting them, the delivery must survive (the API said
    202), or the redelivery must find it gone. Never: 202, then the row disappears."""
    db = idb
    config = await _config(db)
    delivery_id = await _final_delivery(db, config, "failed", OLD)
    other = open_database(str(db.url))
    await other.connect()
    redelivered: list[bool] = []
    pending_redeliveries: list[asyncio.Task[bool]] = []

    async def redeliver_meanwhile() -> None:
        task = asyncio.create_task(redeliver(other, config["id"], delivery_id))
        # Either it commits now, or it waits for prune's transaction (row locks, SQLite's
        # write lock) and finishes after it.
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if done:
            redelivered.append(task.result())
        else:
            pending_redeliveries.append(task)

    loop, pruning = asyncio.get_running_loop(), retention._pruning_deliveries

    def after_the_first_read(cutoff: datetime) -> WriteUnit[Any]:
        """Prune's unit, which runs `redeliver_meanwhile()` after its first read (the
        batch's ids), inside its transaction, before it goes on."""
        unit = pruning(cutoff)
        rows = yield next(unit)
        if not pending_redeliveries and not redelivered:
            yield from meanwhile_in_unit(loop, db.url.dialect, redeliver_meanwhile)
        return (yield from then(unit, rows))

    monkeypatch.setattr(retention, "_pruning_deliveries", after_the_first_read)
    try:
        await prune(db, older_than=OLDER_THAN, now=NOW)
        for task in pending_redeliveries:
            redelivered.append(await task)
    finally:
        await other.disconnect()

    [accepted] = redelivered
    remaining = await deliveries_of(db, config_id=config["id"])
    if accepted:
        assert [row["status"] for row in remaining] == ["pending"], (
            "redeliver answered 202, then prune deleted the delivery it had just made pending"
        )
    else:
        assert remaining == []


# --- the poller prunes on its own -------------------------------------------------------


def _poller(db: Database, *, retention_s: float, prune_interval_s: float) -> Poller:
    return Poller(
        db,
        lambda ids: None,
        LocalWakeup(),
        poll_interval_s=0.1,
        sweep_grace_s=60,
        retention_s=retention_s,
        prune_interval_s=prune_interval_s,
    )


async def test_the_poller_prunes_what_is_older_than_the_retention(idb: Database) -> None:
    db = idb
    config = await _config(db)
    now = datetime.now(UTC)
    old = await _final_delivery(db, config, "delivered", now - timedelta(days=91), tries=1)
    recent = await _final_delivery(db, config, "delivered", now - timedelta(days=89), tries=1)
    old_event = await _outbox_row(
        db, config["client_id"], now - timedelta(days=91), dispatched=True
    )
    poller = _poller(db, retention_s=90 * 86400, prune_interval_s=0.05)

    await asyncio.sleep(0.06)
    await poller.run_once()

    assert await _delivery_ids(db) == {recent}
    assert old not in await _delivery_ids(db)
    assert old_event not in await _outbox_event_ids(db)


async def test_the_poller_prunes_once_per_interval_and_never_without_a_retention(
    idb: Database,
) -> None:
    db = idb
    config = await _config(db)
    now = datetime.now(UTC)
    await _final_delivery(db, config, "failed", now - timedelta(days=2), tries=1)

    # Not before the first interval has passed (a restart does not prune at once)
    waiting = _poller(db, retention_s=86400, prune_interval_s=3600)
    await waiting.run_once()
    assert len(await _delivery_ids(db)) == 1
    # Never with a retention of 0
    never = _poller(db, retention_s=0, prune_interval_s=0.01)
    await asyncio.sleep(0.02)
    await never.run_once()
    assert len(await _delivery_ids(db)) == 1


# --- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 12 * 3600),
        ("15m", 15 * 60),
        ("45s", 45),
        ("2w", 14 * 86400),
        ("3600", 3600),
        ("0s", 0),
        ("0", 0),
        (" 7D ", 7 * 86400),
        ("90 d", 90 * 86400),
    ],
)
def test_parse_duration_accepts_a_number_with_a_unit(text: str, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "d", "3x", "1.5h", "-1d", "1d2h", "30 days", "ten", "1e3", "0x10"]
)
def test_parse_duration_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_s(text)


# --- the command ------------------------------------------------------------------------


@pytest.mark.e2e
def test_webhooks_prune_prints_the_counts_as_json(tmp_path: Path) -> None:
    env = process_env(DATABASE_URL=f"sqlite:///{tmp_path / 'prune.db'}")

    result = run_webhooks("prune", "--older-than", "0s", env=env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "deliveries": 0,
        "attempts": 0,
        "outbox": 0,
        "idempotency_keys": 0,
    }


@pytest.mark.e2e
@pytest.mark.parametrize("duration", ["3x", "-5d", "soon"])
def test_webhooks_prune_with_a_bad_duration_exits_1_with_a_clear_message(
    tmp_path: Path, duration: str
) -> None:
    env = process_env(DATABASE_URL=f"sqlite:///{tmp_path / 'prune.db'}")

    result = run_webhooks("prune", "--older-than", duration, env=env)

    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"webhooks: not a duration: {duration!r} (use e.g. 30d, 12h, 15m, 3600)"
    )


@pytest.mark.e2e
@pytest.mark.parametrize("duration", ["1000000d", "99999999999999999999"])
def test_webhooks_prune_with_a_duration_beyond_the_calendar_exits_1_with_a_clear_message(
    tmp_path: Path, duration: str
) -> None:
    """A cutoff before year 1 cannot be computed: a message, not a traceback."""
    env = process_env(DATABASE_URL=f"sqlite:///{tmp_path / 'prune.db'}")

    result = run_webhooks("prune", "--older-than", duration, env=env)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-500:]
    assert result.stderr.strip().splitlines()[-1].startswith("webhooks: "), result.stderr[-500:]


# --- how fast ---------------------------------------------------------------------------

RATE_DELIVERIES = 20_000


async def _bulk_delivered(db: Database, config: dict[str, Any], count: int, at: datetime) -> None:
    """`count` delivered deliveries with one attempt each: one made the ordinary way, the
    rest copied from it by the database itself (a row at a time would take minutes)."""
    template = await new_delivery(
        db, config, status="delivered", created_at=at, last_attempt_at=at, delivered_at=at
    )
    if db.url.dialect == "postgresql":
        new_id, series = "gen_random_uuid()::text", "generate_series(1, :copies)"
    else:
        new_id = "lower(hex(randomblob(16)))"
        series = (
            "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :copies)"
            " SELECT i FROM n)"
        )
    await db.execute(
        (
            "INSERT INTO deliveries (id, config_id, client_id, event_id, event_type, body,"
            " status, attempt_count, created_at, last_attempt_at, delivered_at)"
            f" SELECT {new_id}, config_id, client_id, {new_id}, event_type, body, status, 1,"
            f" created_at, last_attempt_at, delivered_at FROM deliveries, {series} AS copy"
            " WHERE deliveries.id = :template"
        ),
        {"copies": count - 1, "template": template},
    )
    await db.execute(
        (
            "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code,"
            " response_body) SELECT id, 1, last_attempt_at, 5, 200, 'ok' FROM deliveries"
            " WHERE config_id = :config AND status = 'delivered'"
            " AND id NOT IN (SELECT delivery_id FROM attempts)"
        ),
        {"config": config["id"]},
    )


async def test_prune_rate(
    idb: Database, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Measured, not asserted: the figure goes into the retention report."""
    db = idb
    config = await _config(db)
    await _bulk_delivered(db, config, RATE_DELIVERIES, OLD)
    # Recent rows that every batch's scan has to skip, as in a live database
    await _bulk_delivered(db, await _config(db), RATE_DELIVERIES // 4, NEW)
    assert await _count(db, attempts) == RATE_DELIVERIES * 5 // 4

    started = time.perf_counter()
    pruned = await prune(db, older_than=OLDER_THAN, now=NOW)
    elapsed_s = time.perf_counter() - started

    assert pruned == Pruned(deliveries=RATE_DELIVERIES, attempts=RATE_DELIVERIES, outbox=0)
    backend = database_url.split(":", 1)[0]
    with capsys.disabled():
        print(
            f"\nprune rate ({backend}): {RATE_DELIVERIES} deliveries + {RATE_DELIVERIES} "
            f"attempts in {elapsed_s:.2f} s = {RATE_DELIVERIES / elapsed_s:,.0f} deliveries/s, "
            f"{2 * RATE_DELIVERIES / elapsed_s:,.0f} rows/s (batch {retention.PRUNE_BATCH})"
        )
