"""Everything the portal reads and writes, and the only module of it that does.

Configurations, deliveries, redelivery, recovery and pings go through the same domain
functions as the API (`core.configs`, `service.deliveries`), so each rule (ownership,
validation, redelivery) has one place; the portal's own rows are its signing key and
its sessions. `Scoped` is a session's view: every read and action of a page goes
through it, and it answers None for whatever is not the session's client's, or not its
one configuration, exactly as for what does not exist.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core import configs, lifecycle
from core.clock import utcnow
from core.database import Database
from core.settings import Settings
from core.tables import clients, portal_sessions, service_keys
from service import deliveries
from service.deliveries import Filters, Health
from service.portal.links import Link

PORTAL_KEY_NAME = "portal_secret"
HEALTH_WINDOW = timedelta(hours=24)
# Ended or expired sessions are removed this long after their expiry, at each login.
SESSION_RETENTION = timedelta(days=1)

Enqueue = Callable[[list[str]], Awaitable[None]]


@dataclass(frozen=True)
class Session:
    id: str
    client_id: str
    config_id: str | None
    expires_at: datetime


def _insert(db: Database) -> Any:
    return postgresql.insert if db.url.dialect == "postgresql" else sqlite.insert


async def portal_key(db: Database, settings: Settings) -> bytes:
    """`WEBHOOKS_PORTAL_SECRET`, else the key kept in the database, made by the first
    process that needed it (the others read that one)."""
    if settings.portal_secret is not None:
        return settings.portal_secret.get_secret_value().encode()
    query = sa.select(service_keys.c.value).where(service_keys.c.name == PORTAL_KEY_NAME)
    value = await db.fetch_val(query)
    if value is None:
        await db.execute(
            _insert(db)(service_keys)
            .values(name=PORTAL_KEY_NAME, value=secrets.token_urlsafe(48), created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        value = await db.fetch_val(query)
    return str(value).encode()


async def open_session(
    db: Database, link: Link, cookie_hash: str, *, now: datetime
) -> Session | None:
    """A session for a valid link; None if the link has opened one already (single use)."""
    expires_at = datetime.fromtimestamp(link.expires_at_s, tz=now.tzinfo)
    session_id = str(uuid.uuid4())
    values = {
        "id": session_id,
        "link_id": link.link_id,
        "cookie_hash": cookie_hash,
        "client_id": link.client_id,
        "config_id": link.config_id,
        "created_at": now,
        "expires_at": expires_at,
    }
    async with db.transaction():
        await db.execute(
            portal_sessions.delete().where(portal_sessions.c.expires_at < now - SESSION_RETENTION)
        )
        opened = await db.fetch_val(
            _insert(db)(portal_sessions)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["link_id"])
            .returning(portal_sessions.c.id)
        )
    if opened is None:
        return None
    return Session(session_id, link.client_id, link.config_id, expires_at)


async def find_session(db: Database, cookie_hash: str, *, now: datetime) -> Session | None:
    """The live session of a cookie: not ended, not expired, its client not revoked."""
    row = await db.fetch_one(
        sa.select(
            portal_sessions.c.id,
            portal_sessions.c.client_id,
            portal_sessions.c.config_id,
            portal_sessions.c.expires_at,
        )
        .join(clients, clients.c.id == portal_sessions.c.client_id)
        .where(
            portal_sessions.c.cookie_hash == cookie_hash,
            portal_sessions.c.ended_at.is_(None),
            portal_sessions.c.expires_at > now,
            clients.c.revoked_at.is_(None),
        )
    )
    if row is None:
        return None
    return Session(row["id"], row["client_id"], row["config_id"], row["expires_at"])


async def end_session(db: Database, session_id: str, *, now: datetime) -> None:
    await db.execute(
        portal_sessions.update().where(portal_sessions.c.id == session_id).values(ended_at=now)
    )


async def client_config(db: Database, client_id: str, config_id: str) -> dict[str, Any] | None:
    """For the API's session links: the client's configuration, or None."""
    return await configs.get_config(db, client_id, config_id)


class Scoped:
    """One session's view of the data: its client's configurations (or its one), their
    deliveries, and the actions on them."""

    def __init__(self, db: Database, session: Session, *, enqueue: Enqueue) -> None:
        self.db = db
        self.session = session
        self._enqueue = enqueue

    def _sees(self, config_id: str) -> bool:
        return self.session.config_id in (None, config_id)

    async def configs(self) -> list[dict[str, Any]]:
        if self.session.config_id is not None:
            one = await self.config(self.session.config_id)
            return [one] if one is not None else []
        return await configs.list_configs(self.db, self.session.client_id)

    async def config(self, config_id: str) -> dict[str, Any] | None:
        if not self._sees(config_id):
            return None
        return await configs.get_config(self.db, self.session.client_id, config_id)

    async def health(self, config_ids: list[str], *, now: datetime) -> dict[str, Health]:
        """Of configurations this view returned."""
        return await deliveries.health(self.db, config_ids, since=now - HEALTH_WINDOW)

    async def hourly(
        self, config: dict[str, Any], *, now: datetime
    ) -> list[tuple[datetime, dict[str, int]]]:
        return await deliveries.hourly(self.db, config["id"], until=now)

    async def deliveries(
        self, config: dict[str, Any], filters: Filters, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page, newest first; raises `deliveries.BadCursor`."""
        return await deliveries.list_deliveries(
            self.db, config["id"], filters, limit=limit, cursor=cursor
        )

    async def delivery(self, delivery_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The delivery, with its attempts and body, and its configuration."""
        item = await deliveries.get_delivery(self.db, None, delivery_id, with_body=True)
        if item is None:
            return None
        config = await self.config(item["config_id"])
        return (item, config) if config is not None else None

    async def update(
        self, config: dict[str, Any], changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Validated `changes` (as `PATCH` takes them); the held deliveries that enabling
        releases are queued."""
        row, released = await configs.update_config(
            self.db, self.session.client_id, config["id"], changes
        )
        if released:
            await self._enqueue(released)
        return row

    async def rotate_secret(self, config: dict[str, Any]) -> str | None:
        return await configs.rotate_secret(self.db, self.session.client_id, config["id"])

    async def ping(self, config: dict[str, Any]) -> str:
        delivery_id = await deliveries.create_ping(self.db, config)
        await self._enqueue([delivery_id])
        return delivery_id

    async def redeliver(self, item: dict[str, Any]) -> str | None:
        """Send the delivery again; None, or why it cannot be."""
        if not await lifecycle.redeliver(self.db, item["config_id"], item["id"]):
            found = await deliveries.get_delivery(self.db, item["config_id"], item["id"])
            status = found["status"] if found is not None else None
            return deliveries.NOT_REDELIVERABLE.get(status or "", "the delivery is gone")
        await self._enqueue([item["id"]])
        return None

    async def recover(
        self, config: dict[str, Any], *, since: datetime, until: datetime | None
    ) -> int:
        ids = await lifecycle.recover(self.db, config["id"], since=since, until=until)
        await self._enqueue(ids)
        return len(ids)
