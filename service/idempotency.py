"""`Idempotency-Key` (SPEC 14): a retried request gets the first answer again and writes
nothing; the same key with another body is a `409 idempotency_conflict`.

The database decides which request writes. `once(db, scope, work)` runs, in ONE write
transaction: the removal of this key's expired row, the INSERT of the key's row (ON
CONFLICT DO NOTHING on its primary key: client, route, key), and, only if that inserted
it, `work` (the request's writes) and the storing of its answer. Of concurrent requests
with one key:

- on PostgreSQL, the INSERT of the second waits for the first's transaction to end,
  then inserts nothing (the first committed) or inserts (it rolled back);
- on SQLite, write transactions are serial (one writer, BEGIN IMMEDIATE): the second
  sees the first's committed (or, in the same group commit, released) row.

Either way the loser reads the stored answer and returns it: one write, one answer.
Validation failures (400, 413, 415, 422) happen before this and are not stored, as with
Stripe; answers of the work itself (201, 200, 404, 409) are.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from starlette.requests import Request
from starlette.responses import Response

from core.clock import utcnow
from core.database import Database, Query, WriteUnit, run_in_transaction
from core.tables import idempotency_keys
from service.errors import Conflict, ValidationFailed

HEADER = "Idempotency-Key"
KEY_TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255
REPLAYED_HEADER = "Idempotent-Replayed"


class IdempotencyConflict(Conflict):
    """The key was used with another body (on this route, by this client)."""

    status_code, code = 409, "idempotency_conflict"


@dataclass(frozen=True)
class Answer:
    """An answer as it is stored and replayed: the status and the JSON body's text."""

    status_code: int
    body: str

    @classmethod
    def of(cls, status_code: int, document: Any) -> Answer:
        # As Starlette's JSONResponse renders it, so a replay is byte for byte the same.
        text = json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return cls(status_code, text)

    def response(self, *, replayed: bool = False) -> Response:
        headers = {REPLAYED_HEADER: "true"} if replayed else None
        return Response(self.body, self.status_code, headers, media_type="application/json")


@dataclass(frozen=True)
class Scope:
    """Whose key, for which route, and the hash of the body it was first sent with."""

    client_id: str
    route: str
    key: str
    request_hash: str


def idempotency_key(request: Request) -> str | None:
    """The request's `Idempotency-Key`, or None; a 422 unless it is 1..255 printable
    ASCII characters (space included, as in any header value)."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in key):
        raise ValidationFailed(
            "request validation failed",
            details=[{"field": HEADER, "message": "must be 1 to 255 printable ASCII characters"}],
        )
    return key


def request_hash(document: Any) -> str:
    """SHA-256 of the request's validated body as canonical JSON (keys sorted): the same
    request sent again hashes the same, whatever its spacing or key order."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


_KEY = sa.and_(
    idempotency_keys.c.client_id == sa.bindparam("client_id"),
    idempotency_keys.c.route == sa.bindparam("route"),
    idempotency_keys.c.key == sa.bindparam("key"),
)
_DROP_EXPIRED = idempotency_keys.delete().where(
    _KEY,
    idempotency_keys.c.expires_at <= sa.bindparam("now", type_=idempotency_keys.c.expires_at.type),
)
_STORED = sa.select(
    idempotency_keys.c.request_hash, idempotency_keys.c.status_code, idempotency_keys.c.body
).where(_KEY)
_SAVE_ANSWER = (
    idempotency_keys.update()
    .where(_KEY)
    .values(status_code=sa.bindparam("status_code"), body=sa.bindparam("body"))
)
_CLAIM_COLUMNS = ("client_id", "route", "key", "request_hash", "created_at", "expires_at")


def _claim(insert: Any) -> sa.Insert:
    """INSERT the key's row unless it exists (the dialect's ON CONFLICT DO NOTHING)."""
    statement = insert(idempotency_keys).values(
        {name: sa.bindparam(name, type_=idempotency_keys.c[name].type) for name in _CLAIM_COLUMNS}
    )
    claim: sa.Insert = statement.on_conflict_do_nothing(
        index_elements=["client_id", "route", "key"]
    ).returning(idempotency_keys.c.key)
    return claim


_CLAIMS = {"postgresql": _claim(postgresql.insert), "sqlite": _claim(sqlite.insert)}


async def once(db: Database, scope: Scope, work: WriteUnit[Answer]) -> tuple[Answer, bool]:
    """`work`'s answer, run and stored under `scope`'s key in one transaction; or, if the
    key is taken (not expired), the stored answer and nothing written. Returns the
    answer and whether it is a replay; `IdempotencyConflict` if the key was used with
    another body."""
    return await run_in_transaction(db, _once(_CLAIMS[db.url.dialect], scope, work))


def _once(
    claim: sa.Insert, scope: Scope, work: WriteUnit[Answer]
) -> WriteUnit[tuple[Answer, bool]]:
    key = {"client_id": scope.client_id, "route": scope.route, "key": scope.key}
    now = utcnow()
    yield Query(_DROP_EXPIRED, {**key, "now": now})
    values = {
        **key,
        "request_hash": scope.request_hash,
        "created_at": now,
        "expires_at": now + KEY_TTL,
    }
    if (yield Query(claim, values)):
        answer = yield from work
        yield Query(_SAVE_ANSWER, {**key, "status_code": answer.status_code, "body": answer.body})
        return answer, False
    work.close()
    [stored] = yield Query(_STORED, key)
    if stored["request_hash"] != scope.request_hash:
        raise IdempotencyConflict(
            f"this {HEADER} was used with a different request body; use a new key"
        )
    return Answer(stored["status_code"], stored["body"]), True
