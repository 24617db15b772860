"""Webhook configurations: storage and the rules that are not about HTTP.

Every function takes the owning `client_id`: another client's configuration behaves
exactly like one that does not exist (None).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from core import operational
from core.clock import utcnow
from core.database import Database, Query, WriteUnit, fetch_all, fetch_one, run_in_transaction
from core.lifecycle import cancelling, releasing_held
from core.signing_keys import DEFAULT_SCHEME, SignatureScheme, new_signing_key
from core.signing_keys import new_signing_secret as new_signing_secret  # re-exported
from core.tables import webhook_configs

PREVIOUS_SECRET_TTL = timedelta(hours=24)
MANUAL = "manual"  # `disabled_reason` of a configuration disabled by its client


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
    signature_scheme: SignatureScheme = DEFAULT_SCHEME,
    controls: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Store a new configuration with a signing key of `signature_scheme`; `controls` are
    its delivery controls (SPEC 13, already validated), the column defaults for those not
    given. Returns its row."""
    now = utcnow()
    values = {
        "id": str(uuid.uuid4()),
        "client_id": client_id,
        "url": url,
        "authorization_token": authorization_token or new_authorization_token(),
        "subscribed_events": list(subscribed_events),
        "signing_secret": new_signing_key(signature_scheme),
        "signature_scheme": signature_scheme.value,
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
    the configuration was disabled already: its reason stays). A configuration that this
    disables or enables writes its `webhook_disabled` or `webhook_enabled` event (SPEC 15)
    in the same transaction. A `signature_scheme` other than the current one makes a key
    of the new kind; the old key keeps signing for 24 hours, as after a rotation. Returns
    the row (None if the configuration is not the client's) and the ids of the
    deliveries released from `held`."""
    return await run_in_transaction(db, _updating(client_id, config_id, changes))


_ENABLED = sa.select(webhook_configs.c.enabled).where(_MINE).with_for_update()


def _switching_scheme(client_id: str, config_id: str, scheme: SignatureScheme) -> Query:
    """Give the configuration a key of `scheme` if it signs with another one; the key it
    replaces signs too for 24 hours. (A no-op for the scheme it has.)"""
    now = utcnow()
    return Query(
        webhook_configs.update()
        .where(_mine(client_id, config_id), webhook_configs.c.signature_scheme != scheme.value)
        .values(
            signature_scheme=scheme.value,
            signing_secret=new_signing_key(scheme),
            previous_signing_secret=webhook_configs.c.signing_secret,
            previous_secret_expires_at=now + PREVIOUS_SECRET_TTL,
        )
    )


def _updating(
    client_id: str, config_id: str, changes: dict[str, Any]
) -> WriteUnit[tuple[dict[str, Any] | None, list[str]]]:
    changes = dict(changes)
    scheme = changes.pop("signature_scheme", None)
    if scheme is not None:
        yield _switching_scheme(client_id, config_id, SignatureScheme(scheme))
    enable = changes.get("enabled")
    was_enabled = None
    if enable is not None:
        found = yield Query(_ENABLED, {"client_id": client_id, "config_id": config_id})
        if not found:
            return None, []
        was_enabled = found[0]["enabled"]
        changes |= _toggling(was_enabled=was_enabled, enable=enable)
    rows = yield Query(
        webhook_configs.update()
        .where(_mine(client_id, config_id))
        .values(**changes, updated_at=utcnow())
        .returning(*webhook_configs.c)
    )
    if not rows:
        return None, []
    row, released = rows[0], []
    if enable:
        released = yield from releasing_held(config_id)
    if enable is not None and enable != was_enabled:
        yield _announcement(row, released=len(released))
    return row, released


def _toggling(*, was_enabled: bool, enable: bool) -> dict[str, Any]:
    if enable:
        return {"disabled_reason": None, "failing_since": None}
    return {"disabled_reason": MANUAL} if was_enabled else {}


def _announcement(row: dict[str, Any], *, released: int) -> Query:
    mine = {"client_id": row["client_id"], "config_id": row["id"], "url": row["url"]}
    if row["enabled"]:
        return operational.webhook_enabled(**mine, released=released, at=row["updated_at"])
    return operational.webhook_disabled(**mine, disabled_reason=MANUAL, at=row["updated_at"])


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


# A rotation that raced a switch of the scheme makes a key of the new scheme instead.
ROTATION_TRIES = 3


async def rotate_secret(db: Database, client_id: str, config_id: str) -> str | None:
    """Make a new signing key of the configuration's scheme; the current one keeps
    signing for 24 hours. One statement, guarded by the scheme the key was made for, so
    that concurrent rotations each keep the key they replaced. Returns the new stored
    key (a `whsk_` private key for `v1a`: show the client `signing_keys.shown_key`), or
    None if the configuration is not the client's."""
    for _ in range(ROTATION_TRIES):
        config = await get_config(db, client_id, config_id)
        if config is None:
            return None
        scheme = SignatureScheme(config["signature_scheme"])
        key = new_signing_key(scheme)
        row = await fetch_one(db, _rotation(client_id, config_id, scheme, key))
        if row is not None:
            return key
    raise RuntimeError("the signature scheme kept changing during a rotation")


def _rotation(client_id: str, config_id: str, scheme: SignatureScheme, key: str) -> sa.Update:
    now = utcnow()
    return (
        webhook_configs.update()
        .where(_mine(client_id, config_id), webhook_configs.c.signature_scheme == scheme.value)
        .values(
            signing_secret=key,
            previous_signing_secret=webhook_configs.c.signing_secret,
            previous_secret_expires_at=now + PREVIOUS_SECRET_TTL,
            updated_at=now,
        )
        .returning(webhook_configs.c.id)
    )
