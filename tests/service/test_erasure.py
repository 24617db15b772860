"""`POST /api/v2/patients/{patient_id}/erase` (SPEC 14), on both backends: the client's
surveys of the patient and every stored copy of them (events, delivery bodies, receivers'
answers, idempotent answers) lose the patient's data in one transaction; pending and held
deliveries are cancelled, final ones keep their status; the erasure is recorded under a
keyed hash; nothing of the patient remains in any table."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

import service.surveys
from core.clock import utcnow
from core.database import Database, record_dict
from core.erasures import ERASED_PATIENT_ID, erase, erasure_key, patient_hash
from core.events import event_body
from core.tables import (
    attempts,
    deliveries,
    erasures,
    idempotency_keys,
    outbox,
    surveys,
)
from outbox.fanout import fan_out_batch
from tests.conftest import NewClient
from tests.outbox.helpers import (
    attempts_of,
    deliveries_of,
    new_config,
    outbox_rows,
    survey_rows,
    where_found,
)
from tests.service.portal.support import sign_in
from tests.service.support import assert_error, error_fields, snapshot

SURVEYS = "/api/v2/surveys"


def erase_path(patient_id: str) -> str:
    return f"/api/v2/patients/{patient_id}/erase"


def _db(app: Starlette) -> Database:
    db: Database = app.state.db
    return db


@dataclass
class Patient:
    """A client's patient with three surveys (created, created and completed, created
    after the fan-out), their deliveries to an enabled and a disabled configuration, and
    the receivers' answers."""

    client: dict[str, str]
    patient_id: str
    secret: str  # an answer's value, unique to this test
    survey_ids: list[str]
    enabled_config: dict[str, Any]
    held_config: dict[str, Any]


async def _deliveries(db: Database, config_id: str) -> list[dict[str, Any]]:
    """The configuration's deliveries in a stable order (one fan-out's share a time)."""
    return sorted(await deliveries_of(db, config_id=config_id), key=lambda row: row["id"])


async def _fan_out(db: Database) -> None:
    while (await fan_out_batch(db, batch_size=500)).events:
        pass


async def _record_attempt(db: Database, delivery_id: str, *, status: str, reply: str) -> None:
    """An attempt answered with `reply` (status code 200 or 500), and `status` after it."""
    await db.execute(
        attempts.insert().values(
            delivery_id=delivery_id,
            number=1,
            started_at=utcnow(),
            duration_ms=12,
            status_code=200 if status == "delivered" else 500,
            response_body=reply,
        )
    )
    await db.execute(
        deliveries.update()
        .where(deliveries.c.id == delivery_id)
        .values(status=status, attempt_count=1, last_attempt_at=utcnow(), next_attempt_at=None)
    )


async def given_a_patient(api: httpx.AsyncClient, db: Database, client: dict[str, str]) -> Patient:
    """See `Patient`. Of the enabled configuration's deliveries, the first survey's is
    `delivered` and the second's creation `failed`, both with an answer that echoes the
    patient; the rest are pending, and the disabled configuration's held."""
    tag = uuid.uuid4().hex
    patient_id, secret = f"patient-{tag}", f"answer-{tag}"
    headers = {"Authorization": client["Authorization"]}
    enabled = await new_config(db, client["id"])
    held = await new_config(db, client["id"], enabled=False)
    body = {"patient_id": patient_id, "answers": {"q1": secret}}
    first = await api.post(SURVEYS, json=body, headers={**headers, "Idempotency-Key": tag})
    second = await api.post(SURVEYS, json=body, headers=headers)
    done = await api.patch(
        f"{SURVEYS}/{second.json()['id']}",
        json={"status": "completed", "answers": {"q2": secret}},
        headers={**headers, "Idempotency-Key": tag},
    )
    assert done.status_code == 200, done.text
    await _fan_out(db)
    third = await api.post(SURVEYS, json=body, headers=headers)  # not fanned out yet
    made = await _deliveries(db, enabled["id"])
    reply = json.dumps({"received": {"patient_id": patient_id, "answers": {"q1": secret}}})
    await _record_attempt(db, made[0]["id"], status="delivered", reply=reply)
    await _record_attempt(db, made[1]["id"], status="failed", reply=reply)
    ids = [response.json()["id"] for response in (first, second, third)]
    return Patient(client, patient_id, secret, ids, enabled, held)


@pytest.fixture
async def client(new_client: NewClient) -> dict[str, str]:
    return await new_client()


async def _erase(api: httpx.AsyncClient, client: dict[str, str], patient_id: str) -> Any:
    response = await api.post(
        erase_path(patient_id), headers={"Authorization": client["Authorization"]}
    )
    assert response.status_code == 202, response.text
    return response.json()


async def test_erasure_counts_the_surveys_and_the_emptied_deliveries(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    patient = await given_a_patient(api, _db(app), client)

    # Three surveys; three events fanned out to two configurations (the third's event
    # was not fanned out yet, and never will be).
    assert await _erase(api, client, patient.patient_id) == {"surveys": 3, "deliveries": 6}


async def test_nothing_of_the_patient_remains_in_any_table(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    db = _db(app)
    patient = await given_a_patient(api, db, client)
    # Retention may prune an event before its deliveries: those are found by their body.
    await db.execute(
        outbox.delete()
        .where(outbox.c.client_id == client["id"])
        .where(
            outbox.c.seq
            == sa.select(sa.func.min(outbox.c.seq))
            .where(outbox.c.client_id == client["id"])
            .scalar_subquery()
        )
    )
    assert await where_found(db, patient.patient_id, patient.secret)

    await _erase(api, client, patient.patient_id)

    assert await where_found(db, patient.patient_id, patient.secret) == []


async def test_surveys_keep_their_ids_statuses_and_times(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    db = _db(app)
    patient = await given_a_patient(api, db, client)
    before = {row["id"]: row for row in await survey_rows(db, client["id"])}

    await _erase(api, client, patient.patient_id)

    after = {row["id"]: row for row in await survey_rows(db, client["id"])}
    assert set(after) == set(before) == set(patient.survey_ids)
    for survey_id, row in after.items():
        assert row["patient_id"] == ERASED_PATIENT_ID
        assert row["answers"] == {}
        kept = ("status", "created_at", "completed_at", "client_id")
        assert {k: row[k] for k in kept} == {k: before[survey_id][k] for k in kept}
    got = await api.get(f"{SURVEYS}/{patient.survey_ids[1]}", headers=_auth(client))
    assert got.json()["patient_id"] == ERASED_PATIENT_ID
    assert got.json()["status"] == "completed"


def _auth(client: dict[str, str]) -> dict[str, str]:
    return {"Authorization": client["Authorization"]}


async def test_pending_and_held_deliveries_are_cancelled_final_ones_keep_their_status(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    db = _db(app)
    patient = await given_a_patient(api, db, client)
    enabled_before = await _deliveries(db, patient.enabled_config["id"])
    assert [d["status"] for d in enabled_before] == ["delivered", "failed", "pending"]
    assert {d["status"] for d in await _deliveries(db, patient.held_config["id"])} == {"held"}

    await _erase(api, client, patient.patient_id)

    enabled_after = await _deliveries(db, patient.enabled_config["id"])
    assert [d["status"] for d in enabled_after] == ["delivered", "failed", "cancelled"]
    held_after = await _deliveries(db, patient.held_config["id"])
    assert {d["status"] for d in held_after} == {"cancelled"}
    for before, after in zip(enabled_before, enabled_after, strict=True):
        kept = ("id", "event_id", "event_type", "attempt_count", "created_at", "last_attempt_at")
        assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
    for row in enabled_after + held_after:
        assert json.loads(row["body"]) == {"event_type": row["event_type"], "content": {}}
        assert row["body"] == event_body(row["event_type"], {})
        assert row["next_attempt_at"] is None and row["lease_expires_at"] is None
    for row in enabled_after[:2]:
        [attempt] = await attempts_of(db, row["id"])
        assert attempt["response_body"] is None
        assert attempt["status_code"] in (200, 500)


async def test_the_events_are_emptied_and_the_unsent_one_never_fans_out(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    db = _db(app)
    patient = await given_a_patient(api, db, client)

    await _erase(api, client, patient.patient_id)
    await _fan_out(db)

    events = await outbox_rows(db, client["id"])
    assert len(events) == 4
    assert all(event["content"] == {} and event["dispatched_at"] is not None for event in events)
    assert len(await deliveries_of(db, client_id=client["id"])) == 6


async def test_the_stored_idempotent_answers_of_the_surveys_go(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    db = _db(app)
    patient = await given_a_patient(api, db, client)
    other = {"patient_id": f"other-{uuid.uuid4()}", "answers": {"q": "kept"}}
    kept = await api.post(SURVEYS, json=other, headers={**_auth(client), "Idempotency-Key": "k"})
    query = sa.select(idempotency_keys.c.body).where(idempotency_keys.c.client_id == client["id"])
    assert len(await db.fetch_all(query)) == 3

    await _erase(api, client, patient.patient_id)

    assert [row[0] for row in await db.fetch_all(query)] == [kept.text]


async def test_other_patients_and_other_clients_are_untouched(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str], new_client: NewClient
) -> None:
    db = _db(app)
    patient = await given_a_patient(api, db, client)
    neighbour = await given_a_patient(api, db, client)
    stranger = await new_client()
    # The other client's patient has the same id: it is another client's patient.
    same_id = await given_a_patient(api, db, stranger)
    await db.execute(
        surveys.update()
        .where(surveys.c.client_id == stranger["id"])
        .values(patient_id=patient.patient_id)
    )
    before = await snapshot(db)

    await _erase(api, client, patient.patient_id)

    after = await snapshot(db)
    theirs = {neighbour.patient_id, neighbour.secret, same_id.secret, stranger["id"]}
    for table in ("surveys", "outbox", "deliveries", "idempotency_keys"):
        untouched = [row for row in before[table] if any(s in str(row) for s in theirs)]
        assert untouched, table
        assert all(row in after[table] for row in untouched), table
    assert {row["id"] for row in after["attempts"]} == {row["id"] for row in before["attempts"]}


async def test_the_erasure_is_recorded_with_a_keyed_hash_not_the_patient(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    db = _db(app)
    patient = await given_a_patient(api, db, client)

    await _erase(api, client, patient.patient_id)

    rows = await db.fetch_all(sa.select(erasures).where(erasures.c.client_id == client["id"]))
    [record] = [record_dict(row) for row in rows]
    key = await erasure_key(db)
    assert record["patient_hash"] == patient_hash(key, client["id"], patient.patient_id)
    assert record["patient_hash"] != patient_hash(b"another key", client["id"], patient.patient_id)
    assert (record["surveys"], record["deliveries"]) == (3, 6)
    assert record["erased_at"] is not None
    assert patient.patient_id not in json.dumps(record, default=str)


async def test_a_second_erasure_finds_nothing_and_is_recorded_too(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    db = _db(app)
    patient = await given_a_patient(api, db, client)
    await _erase(api, client, patient.patient_id)
    before = await snapshot(db)

    assert await _erase(api, client, patient.patient_id) == {"surveys": 0, "deliveries": 0}

    after = await snapshot(db)
    assert len(after["erasures"]) == len(before["erasures"]) + 1
    assert {k: v for k, v in after.items() if k != "erasures"} == {
        k: v for k, v in before.items() if k != "erasures"
    }


async def test_a_patient_without_surveys_gives_zeros(
    api: httpx.AsyncClient, client: dict[str, str]
) -> None:
    assert await _erase(api, client, f"nobody-{uuid.uuid4()}") == {"surveys": 0, "deliveries": 0}


async def test_a_patient_id_with_a_slash_or_spaces_is_erased_too(
    api: httpx.AsyncClient, client: dict[str, str]
) -> None:
    patient_id = f"ward 7/bed {uuid.uuid4()}"
    created = await api.post(SURVEYS, json={"patient_id": patient_id}, headers=_auth(client))
    assert created.status_code == 201

    quoted = patient_id.replace(" ", "%20").replace("/", "%2F")
    assert await _erase(api, client, quoted) == {"surveys": 1, "deliveries": 0}


@pytest.mark.parametrize(
    "segment",
    ["x" * 201, "bad%01id", "tab%09", "%7F", ""],
    ids=["long", "soh", "tab", "del", "empty"],
)
async def test_an_invalid_patient_id_is_a_422_and_changes_nothing(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str], segment: str
) -> None:
    before = await snapshot(_db(app))

    response = await api.post(erase_path(segment), headers=_auth(client))

    assert error_fields(response) == ["patient_id"]
    assert await snapshot(_db(app)) == before


async def test_erasure_needs_an_api_key(api: httpx.AsyncClient) -> None:
    response = await api.post(erase_path("p-1"))

    assert_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_completion_racing_the_erasure_brings_no_patient_data_back(
    api: httpx.AsyncClient,
    app: Starlette,
    client: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a survey whose completion reads it, then the erasure commits, then the
    # completion writes (the worst interleaving, made certain).
    db = _db(app)
    tag = uuid.uuid4().hex
    body = {"patient_id": f"racer-{tag}", "answers": {"q": f"secret-{tag}"}}
    survey = (await api.post(SURVEYS, json=body, headers=_auth(client))).json()
    read = service.surveys.fetch_one

    async def read_then_erase(*args: Any, **kwargs: Any) -> Any:
        row = await read(*args, **kwargs)
        await erase(db, client["id"], body["patient_id"])
        return row

    monkeypatch.setattr(service.surveys, "fetch_one", read_then_erase)

    # When the completion ends.
    done = await api.patch(
        f"{SURVEYS}/{survey['id']}", json={"status": "completed"}, headers=_auth(client)
    )

    # Then it wrote nothing: no event carries the patient again.
    assert_error(done, 409)
    assert await where_found(db, body["patient_id"], f"secret-{tag}") == []
    assert [event["event_type"] for event in await outbox_rows(db, client["id"])] == [
        "survey_created"
    ]


async def test_the_route_is_in_the_openapi_document(api: httpx.AsyncClient) -> None:
    document = (await api.get("/api/v2/openapi.json")).json()

    operation = document["paths"]["/api/v2/patients/{patient_id}/erase"]["post"]
    [parameter] = operation["parameters"]
    assert parameter["name"] == "patient_id"
    assert parameter["schema"]["maxLength"] == 200
    answer = operation["responses"]["202"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/Erasure"}
    assert set(document["components"]["schemas"]["Erasure"]["required"]) == {
        "surveys",
        "deliveries",
    }
    assert {"401", "422"} <= set(operation["responses"])


async def test_the_audit_and_the_portal_still_show_an_erased_delivery(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    db = _db(app)
    patient = await given_a_patient(api, db, client)
    await _erase(api, client, patient.patient_id)
    config_id = patient.enabled_config["id"]
    delivered = (await _deliveries(db, config_id))[0]

    detail = await api.get(
        f"/api/v2/config/webhook/{config_id}/deliveries/{delivered['id']}", headers=_auth(client)
    )
    await sign_in(api, client)
    shown = await api.get(f"/portal/deliveries/{delivered['id']}")

    assert detail.status_code == 200, detail.text
    assert detail.json()["status"] == "delivered"
    [attempt] = detail.json()["attempts"]
    assert (attempt["status_code"], attempt["response_body"]) == (200, None)
    assert shown.status_code == 200, shown.text
    assert "&#34;content&#34;: {}" in shown.text or '"content": {}' in shown.text
    assert patient.patient_id not in shown.text and patient.secret not in shown.text
