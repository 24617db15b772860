"""API clients: keys are shown once and stored only as a SHA-256 hash.

A key has 256 bits of entropy, so a fast hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.database import Database, fetch_all, fetch_one
from core.tables import clients

API_KEY_PREFIX = "whk_"


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


async def create_client(db: Database, name: str) -> dict[str, Any]:
    """Create a client; the returned `api_key` is never stored nor shown again."""
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    client_id = str(uuid.uuid4())
    await fetch_all(
        db,
        clients.insert().values(
            id=client_id, name=name, api_key_hash=hash_api_key(api_key), created_at=utcnow()
        ),
    )
    return {"id": client_id, "name": name, "api_key": api_key}


async def list_clients(db: Database) -> list[dict[str, Any]]:
    return await fetch_all(
        db,
        sa.select(
            clients.c.id, clients.c.name, clients.c.created_at, clients.c.revoked_at
        ).order_by(clients.c.created_at),
    )


async def client_exists(db: Database, client_id: str) -> bool:
    """Whether `client_id` names a client, revoked or not."""
    return await fetch_one(db, sa.select(clients.c.id).where(clients.c.id == client_id)) is not None


async def revoke_client(db: Database, client_id: str) -> bool:
    """Revoke a client's key; False if no such active client."""
    revoked = await fetch_one(
        db,
        clients.update()
        .where(clients.c.id == client_id, clients.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(clients.c.id),
    )
    _recent_keys.clear()
    return revoked is not None


class _KeyCache:
    """Recently authenticated keys, so that a busy client costs no query per request.
    A revocation in this process applies at once; in another process (the CLI) within
    `AUTH_CACHE_TTL_S`."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, float]] = {}

    def get(self, key_hash: str) -> str | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key_hash: str, client_id: str) -> None:
        if len(self._entries) >= AUTH_CACHE_SIZE:
            self._entries.clear()
        self._entries[key_hash] = (client_id, time.monotonic() + AUTH_CACHE_TTL_S)

    def clear(self) -> None:
        self._entries.clear()


AUTH_CACHE_TTL_S = 2.0
AUTH_CACHE_SIZE = 10_000
_recent_keys = _KeyCache()


async def authenticate(db: Database, api_key: str) -> str | None:
    """The id of the active client holding `api_key`, or None."""
    key_hash = hash_api_key(api_key)
    cached = _recent_keys.get(key_hash)
    if cached is not None:
        return cached
    row = await fetch_one(db, _ACTIVE_CLIENT, {"key_hash": key_hash})
    if row is None:
        return None
    _recent_keys.put(key_hash, str(row["id"]))
    return str(row["id"])


_ACTIVE_CLIENT = sa.select(clients.c.id).where(
    clients.c.api_key_hash == sa.bindparam("key_hash"), clients.c.revoked_at.is_(None)
)
