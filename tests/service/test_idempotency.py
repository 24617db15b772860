"""`Idempotency-Key` on `POST /surveys` and `PATCH /surveys/{id}` (SPEC 14), on both
backends: a retry gets the first answer and writes nothing, another body is a 409,
concurrent requests write once, a bad key is a 422, keys expire and are pruned."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

from core.clock import utcnow
from core.database import Database, record_dict
from core.lifecycle import prune
from core.tables import idempotency_keys
from service.idempotency import Answer, request_hash
from tests.conftest import NewClient
from tests.outbox.helpers import outbox_rows, survey_rows
from tests.service.support import assert_error, error_fields, snapshot

SURVEYS = "/api/v2/surveys"
BODY = {"patient_id": "patient-1", "answers": {"q1": "yes"}}
COMPLETE = {"status": "completed", "answers": {"q1": "no"}}


@pytest.fixture
async def client(new_client: NewClient) -> dict[str, str]:
    return await new_client()


def _headers(client: dict[str, str], key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": client["Authorization"]}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def _db(app: Starlette) -> Database:
    db: Database = app.state.db
    return db


async def _key_rows(db: Database, client_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch_all(
        sa.select(idempotency_keys).where(idempotency_keys.c.client_id == client_id)
    )
    return [record_dict(row) for row in rows]


async def test_a_retried_create_gets_the_first_answer_and_writes_nothing(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    first = await api.post(SURVEYS, json=BODY, headers=_headers(client, "create-1"))
    assert first.status_code == 201, first.text
    before = await snapshot(_db(app))

    # Key order and spacing differ: the same request all the same.
    retry = await api.post(
        SURVEYS,
        content='{"answers": {"q1": "yes"},   "patient_id": "patient-1"}',
        headers={**_headers(client, "create-1"), "content-type": "application/json"},
    )

    assert retry.status_code == 201
    assert retry.content == first.content
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await snapshot(_db(app)) == before
    assert len(await survey_rows(_db(app), client["id"])) == 1
    assert len(await outbox_rows(_db(app), client["id"])) == 1


async def test_a_retried_completion_gets_the_first_answer_not_a_409(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    created = (await api.post(SURVEYS, json=BODY, headers=_headers(client))).json()
    url = f"{SURVEYS}/{created['id']}"
    first = await api.patch(url, json=COMPLETE, headers=_headers(client, "done-1"))
    assert first.status_code == 200, first.text
    before = await snapshot(_db(app))

    retry = await api.patch(url, json=COMPLETE, headers=_headers(client, "done-1"))
    without_key = await api.patch(url, json=COMPLETE, headers=_headers(client))

    assert (retry.status_code, retry.content) == (200, first.content)
    assert assert_error(without_key, 409)["code"] == "conflict"
    assert await snapshot(_db(app)) == before
    events = [row["event_type"] for row in await outbox_rows(_db(app), client["id"])]
    assert events == ["survey_created", "survey_finished"]


async def test_the_same_key_with_another_body_is_a_409_and_writes_nothing(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    await api.post(SURVEYS, json=BODY, headers=_headers(client, "k"))
    before = await snapshot(_db(app))

    other = await api.post(
        SURVEYS, json={**BODY, "patient_id": "patient-2"}, headers=_headers(client, "k")
    )

    assert assert_error(other, 409)["code"] == "idempotency_conflict"
    assert await snapshot(_db(app)) == before


async def test_keys_are_scoped_to_the_client_and_the_route(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str], new_client: NewClient
) -> None:
    other = await new_client()
    mine = await api.post(SURVEYS, json=BODY, headers=_headers(client, "shared"))
    theirs = await api.post(SURVEYS, json=BODY, headers=_headers(other, "shared"))
    completed = await api.patch(
        f"{SURVEYS}/{mine.json()['id']}", json=COMPLETE, headers=_headers(client, "shared")
    )

    assert (mine.status_code, theirs.status_code, completed.status_code) == (201, 201, 200)
    assert mine.json()["id"] != theirs.json()["id"]
    assert all("idempotent-replayed" not in r.headers for r in (theirs, completed))
    assert len(await survey_rows(_db(app), other["id"])) == 1


async def test_a_404_answer_is_replayed_too(api: httpx.AsyncClient, client: dict[str, str]) -> None:
    url = f"{SURVEYS}/00000000-0000-4000-8000-000000000000"

    first = await api.patch(url, json=COMPLETE, headers=_headers(client, "missing"))
    retry = await api.patch(url, json=COMPLETE, headers=_headers(client, "missing"))

    assert assert_error(first, 404)["code"] == "not_found"
    assert (retry.status_code, retry.content) == (404, first.content)
    assert retry.headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize("method", ["post", "patch"])
async def test_concurrent_requests_with_one_key_write_once(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str], method: str
) -> None:
    created = (await api.post(SURVEYS, json=BODY, headers=_headers(client))).json()
    url, body = (SURVEYS, BODY) if method == "post" else (f"{SURVEYS}/{created['id']}", COMPLETE)
    send = getattr(api, method)

    responses = await asyncio.gather(
        *(send(url, json=body, headers=_headers(client, "together")) for _ in range(8))
    )

    assert {(r.status_code, r.content) for r in responses} == {
        (responses[0].status_code, responses[0].content)
    }
    assert responses[0].status_code in (200, 201)
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    events = [row["event_type"] for row in await outbox_rows(_db(app), client["id"])]
    assert events == ["survey_created", "survey_created" if method == "post" else "survey_finished"]
    assert len(await survey_rows(_db(app), client["id"])) == (2 if method == "post" else 1)


async def test_a_request_waits_for_the_transaction_that_holds_its_key(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str], db: Database
) -> None:
    # Given another request's transaction that has claimed the key and not yet committed
    now = utcnow()
    stored = Answer.of(201, {"id": "the-first-answer"})
    row = {
        "client_id": client["id"],
        "route": "POST /api/v2/surveys",
        "key": "held",
        "request_hash": request_hash({"patient_id": "patient-1", "answers": {"q1": "yes"}}),
        "status_code": stored.status_code,
        "body": stored.body,
        "created_at": now,
        "expires_at": now + timedelta(hours=24),
    }
    async with db.transaction():
        await db.execute(idempotency_keys.insert().values(**row))
        # When a request with the same key arrives
        request = asyncio.create_task(
            api.post(SURVEYS, json=BODY, headers=_headers(client, "held"))
        )
        await asyncio.sleep(0.5)
        # Then it waits for that transaction (the database decides) ...
        assert not request.done()
    response = await request

    # ... and, once it commits, gets its answer and writes nothing
    assert (response.status_code, response.text) == (201, stored.body)
    assert await survey_rows(_db(app), client["id"]) == []


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "caf\u00e9", "tab\there", "nul\x00"],
    ids=["empty", "long", "nonascii", "tab", "nul"],
)
async def test_a_bad_key_is_a_422_and_writes_nothing(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str], key: str
) -> None:
    before = await snapshot(_db(app))
    headers = [
        ("Authorization", client["Authorization"]),
        ("Idempotency-Key", key.encode("latin-1")),
    ]

    response = await api.post(SURVEYS, json=BODY, headers=headers)

    assert error_fields(response) == ["Idempotency-Key"]
    assert await snapshot(_db(app)) == before


async def test_the_longest_key_is_accepted(api: httpx.AsyncClient, client: dict[str, str]) -> None:
    key = "~ " + "k" * 253
    first = await api.post(SURVEYS, json=BODY, headers=_headers(client, key))
    retry = await api.post(SURVEYS, json=BODY, headers=_headers(client, key))
    assert (first.status_code, retry.content) == (201, first.content)


async def test_an_expired_key_answers_afresh_and_is_pruned(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    first = await api.post(SURVEYS, json=BODY, headers=_headers(client, "old"))
    await api.post(SURVEYS, json=BODY, headers=_headers(client, "young"))
    await _db(app).execute(
        idempotency_keys.update()
        .where(idempotency_keys.c.key == "old")
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )

    again = await api.post(SURVEYS, json=BODY, headers=_headers(client, "old"))

    assert again.status_code == 201
    assert again.json()["id"] != first.json()["id"]
    assert len(await survey_rows(_db(app), client["id"])) == 3
    # The new answer is stored for 24 hours; a prune a day later takes both keys away.
    later = utcnow() + timedelta(hours=24, seconds=1)
    assert len(await _key_rows(_db(app), client["id"])) == 2
    pruned = await prune(_db(app), older_than=timedelta(days=30), now=later)
    # (Other tests' keys in this database expire by then too.)
    assert pruned.idempotency_keys >= 2
    assert await _key_rows(_db(app), client["id"]) == []


async def test_prune_keeps_the_keys_that_have_not_expired(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    await api.post(SURVEYS, json=BODY, headers=_headers(client, "fresh"))

    await prune(_db(app), older_than=timedelta(seconds=0), now=utcnow())

    [row] = await _key_rows(_db(app), client["id"])
    assert row["key"] == "fresh"
    retry = await api.post(SURVEYS, json=BODY, headers=_headers(client, "fresh"))
    assert retry.headers["idempotent-replayed"] == "true"
