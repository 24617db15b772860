"""API clients: keys are shown once and stored only as a SHA-256 hash.

A key has 256 bits of entropy, so a fast hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.database import Database, record_dict
from core.tables import clients

API_KEY_PREFIX = "whk_"


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


async def create_client(db: Database, name: str) -> dict[str, Any]:
    """Create a client; the returned `api_key` is never stored nor shown again."""
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    client_id = str(uuid.uuid4())
    await db.execute(
        clients.insert().values(
            id=client_id, name=name, api_key_hash=hash_api_key(api_key), created_at=utcnow()
        )
    )
    return {"id": client_id, "name": name, "api_key": api_key}


async def list_clients(db: Database) -> list[dict[str, Any]]:
    rows = await db.fetch_all(
        sa.select(
            clients.c.id, clients.c.name, clients.c.created_at, clients.c.revoked_at
        ).order_by(clients.c.created_at)
    )
    return [record_dict(row) for row in rows]


async def revoke_client(db: Database, client_id: str) -> bool:
    """Revoke a client's key; False if no such active client."""
    revoked = await db.fetch_val(
        clients.update()
        .where(clients.c.id == client_id, clients.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(clients.c.id)
    )
    return revoked is not None


async def authenticate(db: Database, api_key: str) -> str | None:
    """The id of the active client holding `api_key`, or None."""
    client_id = await db.fetch_val(
        sa.select(clients.c.id).where(
            clients.c.api_key_hash == hash_api_key(api_key), clients.c.revoked_at.is_(None)
        )
    )
    return str(client_id) if client_id is not None else None
