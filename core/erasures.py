"""The right to erasure (SPEC 14): one client's surveys of one patient, and every copy of
them the platform keeps, lose the patient's data in ONE transaction.

What `erase` empties, and into what:

- `surveys`: `answers` becomes `{}` and `patient_id` becomes `"erased"`
  (`ERASED_PATIENT_ID`); id, status and times stay.
- `outbox.content` of the surveys' events becomes `{}`; an event not yet fanned out is
  marked dispatched, so that it never becomes a delivery with nothing to say.
- `deliveries.body` becomes `{"event_type": ..., "content": {}}` and the receivers'
  answers (`attempts.response_body`) NULL; pending and held deliveries are cancelled
  (`core.lifecycle.emptying`).
- `idempotency_keys`: the stored answers of the surveys' requests (a route that ends in
  the survey's id, or an answer that names it) are deleted, with the hash of the request
  body they keep: a retry with such a key after the erasure is a new request.

The erasure itself is recorded in `erasures` with counts and a keyed hash of the patient
(`patient_hash`), never the patient id in clear. The key is made once and kept in
`service_keys`, like the portal's, so every process of one database shares it.

Races: the surveys' UPDATE comes first and locks their rows (PostgreSQL), so a
completion that read the survey before the erasure finds it changed and writes nothing
(`service.surveys` guards its UPDATE on the patient id it read); a survey created after
the erasure is new data. A second erasure of the same patient finds no survey: zeros.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core.clock import utcnow
from core.database import Database, Query, WriteUnit, fetch_all, fetch_one, run_in_transaction
from core.lifecycle import emptying
from core.tables import UTCDateTime, erasures, idempotency_keys, outbox, service_keys, surveys

ERASED_PATIENT_ID = "erased"
ERASURE_KEY_NAME = "erasure_key"


@dataclass(frozen=True)
class Erased:
    """What one erasure emptied: the client's surveys of the patient, and the deliveries
    whose payload was emptied."""

    surveys: int
    deliveries: int


def patient_hash(key: bytes, client_id: str, patient_id: str) -> str:
    """HMAC-SHA256 (hex) of the client and the patient: whoever holds the key can tell
    whether a given patient of a given client was erased; nobody can read the patient
    from the record. The client is part of the message, so one patient's erasures by
    two clients cannot be linked. (Patient ids hold no control character: the NUL
    separator is unambiguous.)"""
    message = f"{client_id}\x00{patient_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


_KEY = sa.select(service_keys.c.value).where(service_keys.c.name == ERASURE_KEY_NAME)


async def erasure_key(db: Database) -> bytes:
    """The key of `patient_hash`: made by the first process that needs it and kept in
    `service_keys` (ON CONFLICT DO NOTHING: concurrent first erasures agree on one)."""
    row = await fetch_one(db, _KEY)
    if row is None:
        insert = postgresql.insert if db.url.dialect == "postgresql" else sqlite.insert
        values = {"name": ERASURE_KEY_NAME, "value": secrets.token_urlsafe(48)}
        await fetch_all(
            db,
            insert(service_keys)
            .values(**values, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["name"]),
        )
        row = await fetch_one(db, _KEY)
        assert row is not None
    return str(row["value"]).encode()


async def erase(db: Database, client_id: str, patient_id: str) -> Erased:
    """Erase the client's surveys of `patient_id` and every stored copy of them, and
    record the erasure, in one transaction; done when this returns."""
    key = await erasure_key(db)
    hashed = patient_hash(key, client_id, patient_id)
    return await run_in_transaction(db, erasing(client_id, patient_id, hashed, now=utcnow()))


_ERASE_SURVEYS = (
    surveys.update()
    .where(
        surveys.c.client_id == sa.bindparam("client_id"),
        surveys.c.patient_id == sa.bindparam("patient"),
    )
    .values(
        patient_id=ERASED_PATIENT_ID, answers=sa.bindparam("empty", type_=surveys.c.answers.type)
    )
    .returning(surveys.c.id)
)
_RECORD = erasures.insert().values(
    {name: sa.bindparam(name) for name in (column.key for column in erasures.columns)}
)


def erasing(client_id: str, patient_id: str, hashed: str, *, now: datetime) -> WriteUnit[Erased]:
    """`erase` as a write unit; `hashed` is the patient's `patient_hash`."""
    erased = yield Query(
        _ERASE_SURVEYS, {"client_id": client_id, "patient": patient_id, "empty": {}}
    )
    survey_ids = [str(row["id"]) for row in erased]
    emptied = (yield from _erasing_copies(client_id, survey_ids, now=now)) if survey_ids else 0
    record = {
        "id": str(uuid.uuid4()),
        "client_id": client_id,
        "patient_hash": hashed,
        "erased_at": now,
        "surveys": len(survey_ids),
        "deliveries": emptied,
    }
    yield Query(_RECORD, record)
    return Erased(len(survey_ids), emptied)


def _erasing_copies(client_id: str, survey_ids: list[str], *, now: datetime) -> WriteUnit[int]:
    """The surveys' events, deliveries and idempotent answers emptied; how many
    deliveries. Events first: on PostgreSQL a poller fanning one out holds it, and its
    deliveries are committed (and seen by the next statement) once we get it."""
    events = yield Query(
        outbox.update()
        .where(
            outbox.c.client_id == client_id,
            outbox.c.content["id"].as_string().in_(survey_ids),
        )
        .values(
            content=sa.bindparam("empty", type_=outbox.c.content.type),
            dispatched_at=sa.func.coalesce(
                outbox.c.dispatched_at, sa.bindparam("now", type_=UTCDateTime)
            ),
        )
        .returning(outbox.c.event_id),
        {"empty": {}, "now": now},
    )
    event_ids = [str(row["event_id"]) for row in events]
    emptied = yield from emptying(client_id, event_ids=event_ids, survey_ids=survey_ids)
    yield Query(_idempotent_answers(client_id, survey_ids))
    return emptied


def _idempotent_answers(client_id: str, survey_ids: list[str]) -> sa.Delete:
    """The DELETE of the client's stored answers about these surveys: a request on the
    survey's route (`PATCH .../surveys/<id>`), or an answer that names it (the `201` of
    its creation)."""
    about = [
        condition
        for sid in survey_ids
        for condition in (
            idempotency_keys.c.route.endswith(f"/{sid}", autoescape=True),
            idempotency_keys.c.body.contains(f'"id":"{sid}"', autoescape=True),
        )
    ]
    return idempotency_keys.delete().where(
        idempotency_keys.c.client_id == client_id, sa.or_(*about)
    )
