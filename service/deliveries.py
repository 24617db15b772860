"""The delivery audit (SPEC 8): listing, one delivery with its attempts, redelivery,
recovery of failed deliveries, and pings. Every query is scoped to one configuration
of one client."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.database import Database, Query, WriteUnit, fetch_all, fetch_one, run_in_transaction
from core.events import PING_EVENT, event_body
from core.lifecycle import Status, deliveries_insert, delivery_row, locked_state
from core.tables import attempts, deliveries, outbox, webhook_configs
from core.tracing import current_traceparent

ITEM_COLUMNS = (
    deliveries.c.id,
    deliveries.c.event_id,
    deliveries.c.event_type,
    deliveries.c.status,
    deliveries.c.attempt_count,
    deliveries.c.created_at,
    deliveries.c.last_attempt_at,
    deliveries.c.next_attempt_at,
    deliveries.c.delivered_at,
)
ATTEMPT_COLUMNS = (
    attempts.c.number,
    attempts.c.started_at,
    attempts.c.duration_ms,
    attempts.c.status_code,
    attempts.c.error,
    attempts.c.response_body,
)
# Why a delivery that is not REDELIVERABLE cannot be sent again.
NOT_REDELIVERABLE: dict[str, str] = {
    Status.HELD: "the delivery is held: re-enabling the configuration sends it",
    Status.CANCELLED: "the delivery was cancelled with its configuration",
}
HOUR = timedelta(hours=1)


class BadCursor(ValueError):
    """The cursor was not made by this service."""


@dataclass(frozen=True)
class Filters:
    status: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def encode_cursor(created_at: datetime, delivery_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{delivery_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_at, delivery_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        moment = datetime.fromisoformat(created_at)
        delivery_id = str(uuid.UUID(delivery_id))
        if moment.tzinfo is None:
            raise ValueError("naive time")
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError, binascii.Error, UnicodeError):
        raise BadCursor(cursor) from None
    return moment, delivery_id


def _conditions(config_id: str, filters: Filters) -> list[sa.ColumnElement[bool]]:
    conditions = [deliveries.c.config_id == config_id]
    if filters.status is not None:
        conditions.append(deliveries.c.status == filters.status)
    if filters.event_type is not None:
        conditions.append(deliveries.c.event_type == filters.event_type)
    if filters.since is not None:
        conditions.append(deliveries.c.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(deliveries.c.created_at < filters.until)
    return conditions


async def list_deliveries(
    db: Database, config_id: str, filters: Filters, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; returns the page and the cursor of the next one (or None)."""
    conditions = _conditions(config_id, filters)
    if cursor is not None:
        created_at, delivery_id = decode_cursor(cursor)
        conditions.append(
            sa.or_(
                deliveries.c.created_at < created_at,
                sa.and_(deliveries.c.created_at == created_at, deliveries.c.id < delivery_id),
            )
        )
    rows = await fetch_all(
        db,
        sa.select(*ITEM_COLUMNS)
        .where(*conditions)
        .order_by(deliveries.c.created_at.desc(), deliveries.c.id.desc())
        .limit(limit + 1),
    )
    items = rows[:limit]
    more = len(rows) > limit
    next_cursor = encode_cursor(items[-1]["created_at"], items[-1]["id"]) if more else None
    return items, next_cursor


async def config_exists(db: Database, config_id: str) -> bool:
    """Whether `config_id` names a configuration of any client, deleted ones included:
    the operators' view (the CLI), for whom a deleted configuration's deliveries stay
    on record until they are pruned."""
    query = sa.select(webhook_configs.c.id).where(webhook_configs.c.id == config_id)
    return await fetch_one(db, query) is not None


async def get_delivery(
    db: Database, config_id: str | None, delivery_id: str, *, with_body: bool = False
) -> dict[str, Any] | None:
    """The delivery with its attempts; `config_id` None (operators, the CLI, the portal,
    which checks the owner itself) for any; `body` too, the exact bytes sent, if
    `with_body`."""
    columns = (
        *ITEM_COLUMNS,
        deliveries.c.config_id,
        deliveries.c.waiting_reason,
        webhook_configs.c.headers,
        *([deliveries.c.body] if with_body else []),
    )
    query = (
        sa.select(*columns)
        .join(webhook_configs, webhook_configs.c.id == deliveries.c.config_id)
        .where(deliveries.c.id == delivery_id)
    )
    if config_id is not None:
        query = query.where(deliveries.c.config_id == config_id)
    item = await fetch_one(db, query)
    if item is None:
        return None
    item["attempts"] = await fetch_all(
        db,
        sa.select(*ATTEMPT_COLUMNS)
        .where(attempts.c.delivery_id == delivery_id)
        .order_by(attempts.c.number, attempts.c.id),
    )
    return item


async def create_ping(db: Database, config: dict[str, Any]) -> str:
    """A `ping` delivery to this configuration, whatever it subscribes to (`held` while
    the configuration is disabled, as any other event), in the current request's trace
    (SPEC 17: read here, as the write unit may run on another thread)."""
    return await run_in_transaction(db, _pinging(db, config, current_traceparent()))


def _pinging(db: Database, config: dict[str, Any], traceparent: str | None) -> WriteUnit[str]:
    now = utcnow()
    content = {"config_id": config["id"], "sent_at": now.isoformat()}
    state = yield from locked_state(config["id"])
    # After every event committed so far, for a `fifo` configuration's order.
    [newest] = yield Query(sa.select(sa.func.max(outbox.c.seq).label("seq")))
    row = delivery_row(
        config_id=config["id"],
        client_id=config["client_id"],
        event_id=str(uuid.uuid4()),
        event_type=PING_EVENT,
        body=event_body(PING_EVENT, content),
        enabled=state["enabled"],
        now=now,
        seq=newest["seq"] or 0,
        traceparent=traceparent,
    )
    yield deliveries_insert(db, [row])
    return str(row["id"])


@dataclass(frozen=True)
class Health:
    """A configuration's deliveries since a moment, by status, and its newest delivery
    ever (None if it has had none)."""

    counts: dict[str, int]
    last_created_at: datetime | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def success_rate(self) -> float | None:
        """Delivered over final (delivered or failed); None when none is final yet."""
        delivered, failed = self.counts.get(Status.DELIVERED, 0), self.counts.get(Status.FAILED, 0)
        return delivered / (delivered + failed) if delivered + failed else None


async def health(db: Database, config_ids: Sequence[str], *, since: datetime) -> dict[str, Health]:
    """`Health` of each of `config_ids` (all of one client, already checked) since `since`:
    two grouped reads along the (config_id, created_at) index."""
    if not config_ids:
        return {}
    counted = await db.fetch_all(
        sa.select(deliveries.c.config_id, deliveries.c.status, sa.func.count())
        .where(deliveries.c.config_id.in_(config_ids), deliveries.c.created_at >= since)
        .group_by(deliveries.c.config_id, deliveries.c.status)
    )
    newest = await db.fetch_all(
        sa.select(deliveries.c.config_id, sa.func.max(deliveries.c.created_at).label("last"))
        .where(deliveries.c.config_id.in_(config_ids))
        .group_by(deliveries.c.config_id)
    )
    counts: dict[str, dict[str, int]] = {config_id: {} for config_id in config_ids}
    for row in counted:
        counts[row[0]][row[1]] = int(row[2])
    last = {row[0]: _as_utc(row[1]) for row in newest}
    return {config_id: Health(counts[config_id], last.get(config_id)) for config_id in config_ids}


def _as_utc(value: Any) -> datetime | None:
    """An aggregate's time: `max()` skips the column's type on SQLite (text comes back)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, datetime)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _hour_of(db: Database) -> sa.ColumnElement[str]:
    """`created_at`'s UTC hour as text, `YYYY-MM-DDTHH`, on either backend."""
    if db.url.dialect == "postgresql":
        utc = sa.func.timezone("UTC", deliveries.c.created_at)
        return sa.func.to_char(utc, 'YYYY-MM-DD"T"HH24')
    return sa.func.strftime("%Y-%m-%dT%H", deliveries.c.created_at)


async def hourly(
    db: Database, config_id: str, *, until: datetime, hours: int = 24
) -> list[tuple[datetime, dict[str, int]]]:
    """The configuration's deliveries created in each of the `hours` whole UTC hours up to
    the one `until` falls in, by status: `[(hour start, {status: count})]`, oldest first,
    every hour present."""
    last = until.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first = last - (hours - 1) * HOUR
    bucket = _hour_of(db).label("hour")
    rows = await db.fetch_all(
        sa.select(bucket, deliveries.c.status, sa.func.count())
        .where(deliveries.c.config_id == config_id, deliveries.c.created_at >= first)
        .group_by(bucket, deliveries.c.status)
    )
    buckets: dict[datetime, dict[str, int]] = {first + n * HOUR: {} for n in range(hours)}
    for row in rows:
        start = datetime.fromisoformat(f"{row[0]}:00:00+00:00")
        if start in buckets:
            buckets[start][row[1]] = int(row[2])
    return list(buckets.items())
