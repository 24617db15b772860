"""Webhook configurations: storage and the rules that are not about HTTP.

Every function takes the owning `client_id`: another client's configuration behaves
exactly like one that does not exist (None).
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.database import Database, Query, WriteUnit, fetch_all, fetch_one, run_in_transaction
from core.lifecycle import cancelling, releasing_held
from core.tables import webhook_configs

SIGNING_SECRET_PREFIX = "whsec_"
PREVIOUS_SECRET_TTL = timedelta(hours=24)
MANUAL = "manual"  # `disabled_reason` of a configuration disabled by its client


def new_signing_secret() -> str:
    """`whsec_` + base64 of 32 random bytes, as Standard Webhooks libraries expect."""
    return SIGNING_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_authorization_token() -> str:
    return secrets.token_urlsafe(32)


def _mine(client_id: str, config_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        webhook_configs.c.id == config_id,
        webhook_configs.c.client_id == client_id,
        webhook_configs.c.deleted_at.is_(None),
    )


async def create_config(
    db: Database,
    client_id: str,
    *,
    url: str,
    subscribed_events: Sequence[str],
    authorization_token: str | None,
    controls: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Store a new configuration; `controls` are its delivery controls (SPEC 13, already
    validated), the column defaults for those not given."""
    now = utcnow()
    values = {
        "id": str(uuid.uuid4()),
        "client_id": client_id,
        "url": url,
        "authorization_token": authorization_token or new_authorization_token(),
        "subscribed_events": list(subscribed_events),
        "signing_secret": new_signing_secret(),
        "enabled": True,
        "created_at": now,
        "updated_at": now,
        **(controls or {}),
    }
    [row] = await fetch_all(
        db, webhook_configs.insert().values(**values).returning(*webhook_configs.c)
    )
    return row


_MINE = sa.and_(
    webhook_configs.c.id == sa.bindparam("config_id"),
    webhook_configs.c.client_id == sa.bindparam("client_id"),
    webhook_configs.c.deleted_at.is_(None),
)
_CONFIG = sa.select(webhook_configs).where(_MINE)


async def get_config(db: Database, client_id: str, config_id: str) -> dict[str, Any] | None:
    return await fetch_one(db, _CONFIG, {"client_id": client_id, "config_id": config_id})


async def list_configs(db: Database, client_id: str) -> list[dict[str, Any]]:
    return await fetch_all(
        db,
        sa.select(webhook_configs)
        .where(webhook_configs.c.client_id == client_id, webhook_configs.c.deleted_at.is_(None))
        .order_by(webhook_configs.c.created_at, webhook_configs.c.id),
    )


async def update_config(
    db: Database, client_id: str, config_id: str, changes: dict[str, Any]
) -> tuple[dict[str, Any] | None, list[str]]:
    """Apply `changes` (already validated). `enabled=True` also clears the health state and
    makes the held deliveries due now; `enabled=False` disables by hand (`manual`, unless
    the configuration was disabled already: its reason stays). Returns the row (None if
    the configuration is not the client's) and the ids of the deliveries released from
    `held`."""
    if changes.get("enabled"):
        changes = {**changes, "disabled_reason": None, "failing_since": None}
    elif changes.get("enabled") is False:
        reason = sa.case(
            (webhook_configs.c.enabled, MANUAL), else_=webhook_configs.c.disabled_reason
        )
        changes = {**changes, "disabled_reason": reason}
    return await run_in_transaction(db, _updating(client_id, config_id, changes))


def _updating(
    client_id: str, config_id: str, changes: dict[str, Any]
) -> WriteUnit[tuple[dict[str, Any] | None, list[str]]]:
    rows = yield Query(
        webhook_configs.update()
        .where(_mine(client_id, config_id))
        .values(**changes, updated_at=utcnow())
        .returning(*webhook_configs.c)
    )
    if not rows:
        return None, []
    if not changes.get("enabled"):
        return rows[0], []
    released = yield from releasing_held(config_id)
    return rows[0], released


async def delete_config(db: Database, client_id: str, config_id: str) -> dict[str, Any] | None:
    """Soft-delete the configuration and cancel its deliveries that are not yet final."""
    return await run_in_transaction(db, _deleting(client_id, config_id))


def _deleting(client_id: str, config_id: str) -> WriteUnit[dict[str, Any] | None]:
    rows = yield Query(
        webhook_configs.update()
        .where(_mine(client_id, config_id))
        .values(deleted_at=utcnow())
        .returning(*webhook_configs.c)
    )
    if not rows:
        return None
    yield from cancelling(config_id)
    return rows[0]


async def rotate_secret(db: Database, client_id: str, config_id: str) -> str | None:
    """Make a new signing secret; the current one keeps signing for 24 hours. One
    statement, so that concurrent rotations each keep the secret they replaced."""
    now = utcnow()
    secret = new_signing_secret()
    row = await fetch_one(
        db,
        webhook_configs.update()
        .where(_mine(client_id, config_id))
        .values(
            signing_secret=secret,
            previous_signing_secret=webhook_configs.c.signing_secret,
            previous_secret_expires_at=now + PREVIOUS_SECRET_TTL,
            updated_at=now,
        )
        .returning(webhook_configs.c.id),
    )
    return secret if row is not None else None
