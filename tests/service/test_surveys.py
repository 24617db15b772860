"""Surveys (SPEC 7) through the API on both backends, with the outbox rows they write:
one event per change, committed in the same transaction as the change."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

import service.surveys
from core.clients import create_client
from core.clock import utcnow
from core.database import Database
from outbox.writer import add_event
from service.app import create_app
from tests.conftest import NewClient, make_settings
from tests.outbox.helpers import outbox_rows, survey_rows
from tests.service.support import assert_error, error_fields, snapshot

SURVEYS = "/api/v2/surveys"
SURVEY_FIELDS = {"id", "patient_id", "status", "answers", "created_at", "completed_at"}


@pytest.fixture
async def client(new_client: NewClient) -> dict[str, str]:
    """Headers of a new API client, its id under `id` (not sent)."""
    return await new_client()


def _headers(client: dict[str, str]) -> dict[str, str]:
    return {"Authorization": client["Authorization"]}


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.utcoffset() == timedelta(0), text
    return moment


async def _create(api: httpx.AsyncClient, client: dict[str, str], **body: Any) -> dict[str, Any]:
    body.setdefault("patient_id", "patient-1")
    response = await api.post(SURVEYS, json=body, headers=_headers(client))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _db(app: Starlette) -> Database:
    db: Database = app.state.db
    return db


# --- create and read ------------------------------------------------------------------


async def test_create_returns_the_new_survey(
    api: httpx.AsyncClient, client: dict[str, str]
) -> None:
    before = utcnow()
    response = await api.post(
        SURVEYS,
        json={"patient_id": "patient-42", "answers": {"q1": "yes", "q2": [1, 2]}},
        headers=_headers(client),
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == SURVEY_FIELDS
    assert uuid.UUID(body["id"])
    assert body["patient_id"] == "patient-42"
    assert body["status"] == "in_progress"
    assert body["answers"] == {"q1": "yes", "q2": [1, 2]}
    assert body["completed_at"] is None
    assert before - timedelta(seconds=1) <= _moment(body["created_at"]) <= utcnow()


async def test_answers_default_to_an_empty_object(
    api: httpx.AsyncClient, client: dict[str, str]
) -> None:
    created = await _create(api, client)
    assert created["answers"] == {}


async def test_get_returns_what_create_returned(
    api: httpx.AsyncClient, client: dict[str, str]
) -> None:
    created = await _create(api, client, answers={"q": 1})

    response = await api.get(f"{SURVEYS}/{created['id']}", headers=_headers(client))

    assert response.status_code == 200, response.text
    assert response.json() == created


async def test_create_writes_one_survey_created_event_with_the_survey(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    created = await _create(api, client, answers={"q": "a"})
    shown = (await api.get(f"{SURVEYS}/{created['id']}", headers=_headers(client))).json()

    rows = await outbox_rows(_db(app), client["id"])

    assert len(rows) == 1
    assert rows[0]["event_type"] == "survey_created"
    assert rows[0]["content"] == shown
    assert rows[0]["dispatched_at"] is None
    assert uuid.UUID(rows[0]["event_id"])


# --- complete --------------------------------------------------------------------------


async def test_complete_sets_status_and_completed_at(
    api: httpx.AsyncClient, client: dict[str, str]
) -> None:
    created = await _create(api, client, answers={"q": "first"})
    before = utcnow()

    response = await api.patch(
        f"{SURVEYS}/{created['id']}", json={"status": "completed"}, headers=_headers(client)
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == SURVEY_FIELDS
    assert body["status"] == "completed"
    assert body["answers"] == {"q": "first"}, "answers are kept when not given"
    assert body["created_at"] == created["created_at"]
    assert body["completed_at"] is not None
    assert before - timedelta(seconds=1) <= _moment(body["completed_at"]) <= utcnow()
    shown = await api.get(f"{SURVEYS}/{created['id']}", headers=_headers(client))
    assert shown.json() == body


async def test_complete_replaces_the_answers_when_given(
    api: httpx.AsyncClient, client: dict[str, str]
) -> None:
    created = await _create(api, client, answers={"q1": "a", "q2": "b"})

    response = await api.patch(
        f"{SURVEYS}/{created['id']}",
        json={"status": "completed", "answers": {"q3": "c"}},
        headers=_headers(client),
    )

    assert response.status_code == 200, response.text
    assert response.json()["answers"] == {"q3": "c"}


async def test_complete_writes_one_survey_finished_event_with_the_survey(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    created = await _create(api, client)
    await api.patch(
        f"{SURVEYS}/{created['id']}",
        json={"status": "completed", "answers": {"done": True}},
        headers=_headers(client),
    )
    shown = (await api.get(f"{SURVEYS}/{created['id']}", headers=_headers(client))).json()

    rows = await outbox_rows(_db(app), client["id"])

    assert [row["event_type"] for row in rows] == ["survey_created", "survey_finished"]
    assert rows[1]["content"] == shown
    assert rows[0]["content"] == created
    assert rows[0]["event_id"] != rows[1]["event_id"]


async def test_completing_twice_is_a_conflict_and_emits_nothing(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    created = await _create(api, client)
    url = f"{SURVEYS}/{created['id']}"
    first = await api.patch(url, json={"status": "completed"}, headers=_headers(client))
    assert first.status_code == 200, first.text
    before = await snapshot(_db(app))

    second = await api.patch(
        url, json={"status": "completed", "answers": {"late": 1}}, headers=_headers(client)
    )

    error = assert_error(second, 409)
    assert error["code"] == "conflict"
    assert await snapshot(_db(app)) == before
    rows = await outbox_rows(_db(app), client["id"])
    assert [row["event_type"] for row in rows] == ["survey_created", "survey_finished"]
    shown = await api.get(url, headers=_headers(client))
    assert shown.json() == first.json(), "the second PATCH changed nothing"


async def test_concurrent_completions_emit_one_event(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str]
) -> None:
    created = await _create(api, client)
    url = f"{SURVEYS}/{created['id']}"

    responses = await asyncio.gather(
        *(
            api.patch(
                url, json={"status": "completed", "answers": {"n": n}}, headers=_headers(client)
            )
            for n in range(6)
        )
    )

    codes = sorted(response.status_code for response in responses)
    assert codes == [200, 409, 409, 409, 409, 409]
    [winner] = [response.json() for response in responses if response.status_code == 200]
    rows = await outbox_rows(_db(app), client["id"])
    assert [row["event_type"] for row in rows] == ["survey_created", "survey_finished"]
    assert rows[1]["content"] == winner
    shown = await api.get(url, headers=_headers(client))
    assert shown.json() == winner


# --- ownership and absence -------------------------------------------------------------


async def test_another_clients_survey_is_not_found(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str], new_client: NewClient
) -> None:
    created = await _create(api, client)
    other = await new_client()
    url = f"{SURVEYS}/{created['id']}"
    before = await snapshot(_db(app))

    shown = await api.get(url, headers=_headers(other))
    patched = await api.patch(url, json={"status": "completed"}, headers=_headers(other))

    assert assert_error(shown, 404)["code"] == "not_found"
    assert assert_error(patched, 404)["code"] == "not_found"
    assert await snapshot(_db(app)) == before
    mine = await api.get(url, headers=_headers(client))
    assert mine.json()["status"] == "in_progress"
    assert await outbox_rows(_db(app), other["id"]) == []
    assert len(await outbox_rows(_db(app), client["id"])) == 1


@pytest.mark.parametrize("method", ["GET", "PATCH"])
async def test_an_unknown_survey_is_not_found(
    api: httpx.AsyncClient, app: Starlette, client: dict[str, str], method: str
) -> None:
    await _create(api, client)
    before = await snapshot(_db(app))
    body = {"status": "completed"} if method == "PATCH" else None

    response = await api.request(
        method, f"{SURVEYS}/{uuid.uuid4()}", json=body, headers=_headers(client)
    )

    assert_error(response, 404)
    assert await snapshot(_db(app)) == before


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "patient_id"),
        ({"answers": {}}, "patient_id"),
        ({"patient_id": ""}, "patient_id"),
        ({"patient_id": 7}, "patient_id"),
        ({"patient_id": "p", "answers": [1]}, "answers"),
        ({"patient_id": "p", "status": "completed"}, "status"),
        ({"patient_id": "p", "colour": "blue"}, "colour"),
    ],
)
async def test_create_validation(
    api: httpx.AsyncClient,
    app: Starlette,
    client: dict[str, str],
    body: dict[str, Any],
    field: str,
) -> None:
    before = await snapshot(_db(app))

    response = await api.post(SURVEYS, json=body, headers=_headers(client))

    assert field in error_fields(response)
    assert await snapshot(_db(app)) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "status"),
        ({"status": "in_progress"}, "status"),
        ({"status": "cancelled"}, "status"),
        ({"status": None}, "status"),
        ({"status": "completed", "answers": "yes"}, "answers"),
        ({"status": "completed", "patient_id": "other"}, "patient_id"),
    ],
)
async def test_update_validation(
    api: httpx.AsyncClient,
    app: Starlette,
    client: dict[str, str],
    body: dict[str, Any],
    field: str,
) -> None:
    created = await _create(api, client)
    before = await snapshot(_db(app))

    response = await api.patch(f"{SURVEYS}/{created['id']}", json=body, headers=_headers(client))

    assert field in error_fields(response)
    assert await snapshot(_db(app)) == before


# --- one transaction -------------------------------------------------------------------
#
# Each fault makes the database itself refuse the outbox row of a survey's change once
# the survey's own write has run (the statement before it on SQLite, the same statement
# on PostgreSQL): the survey's write is undone only if both are one transaction.

REFUSED_BY_TEST = "outbox row refused by the test"


@dataclass(frozen=True)
class Refusal:
    """What the driver raises, through our code, when the database refuses the row."""

    error: type[Exception]
    match: str  # a regular expression that its message matches


Fault = Callable[[Database], AbstractAsyncContextManager[Refusal]]


@asynccontextmanager
async def _outbox_refuses_every_row(db: Database) -> AsyncIterator[Refusal]:
    """While open, a trigger makes the database refuse every new outbox row."""
    if db.url.dialect == "sqlite":
        await db.execute(
            sa.text(
                "CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox"
                f" BEGIN SELECT RAISE(ABORT, '{REFUSED_BY_TEST}'); END"
            )
        )
        refusal = Refusal(sqlite3.IntegrityError, REFUSED_BY_TEST)
        drop = "DROP TRIGGER refuse_outbox"
    else:
        await db.execute(
            sa.text(
                "CREATE FUNCTION refuse_outbox() RETURNS trigger LANGUAGE plpgsql"
                f" AS $$ BEGIN RAISE EXCEPTION '{REFUSED_BY_TEST}'; END $$"
            )
        )
        await db.execute(
            sa.text(
                "CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox"
                " FOR EACH ROW EXECUTE FUNCTION refuse_outbox()"
            )
        )
        refusal = Refusal(asyncpg.RaiseError, REFUSED_BY_TEST)
        drop = "DROP TRIGGER refuse_outbox ON outbox"
    try:
        yield refusal
    finally:
        await db.execute(sa.text(drop))


@asynccontextmanager
async def _event_id_taken(db: Database) -> AsyncIterator[Refusal]:
    """While open, a new event gets the id of an existing one (another client's): the
    outbox's unique key refuses it."""
    async with db.transaction():
        taken = await add_event(db, client_id="another", event_type="survey_created", content={})
    original = service.surveys.event_params

    def with_taken_id(**values: Any) -> dict[str, Any]:
        return original(**values, event_id=taken)

    sqlite = db.url.dialect == "sqlite"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service.surveys, "event_params", with_taken_id)
        # SQLite names the column, PostgreSQL the constraint (uq_outbox_event_id).
        yield Refusal(
            sqlite3.IntegrityError if sqlite else asyncpg.UniqueViolationError, "outbox.event_id"
        )


FAULTS = [_outbox_refuses_every_row, _event_id_taken]
INTERNAL_ERROR = {"code": "internal_error", "message": "internal error"}


@pytest.fixture
async def isolated_app(isolated_url: str) -> AsyncIterator[Starlette]:
    """The app on a database of this test alone, where the test may install triggers."""
    application = create_app(make_settings(isolated_url))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def tolerant_api(isolated_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of `isolated_app`; an unhandled error comes back as the app's 500
    response instead of being raised into the test."""
    transport = httpx.ASGITransport(app=isolated_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def _client_of(db: Database) -> dict[str, str]:
    """Headers of a new API client of `db`, its id under `id` (not sent)."""
    created = await create_client(db, "one transaction")
    return {"Authorization": f"Bearer {created['api_key']}", "id": created["id"]}


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_refused_event_leaves_no_survey(
    isolated_app: Starlette, tolerant_api: httpx.AsyncClient, fault: Fault
) -> None:
    db = _db(isolated_app)
    client = await _client_of(db)

    async def assert_nothing_written(before: dict[str, Any]) -> None:
        assert await survey_rows(db, client["id"]) == []
        assert await outbox_rows(db, client["id"]) == []
        assert await snapshot(db) == before

    # Given a database that refuses the outbox row of the survey's event
    async with fault(db) as refusal:
        before = await snapshot(db)

        # When a survey is created through the API
        response = await tolerant_api.post(
            SURVEYS, json={"patient_id": "p"}, headers=_headers(client)
        )

        # Then the client gets a JSON error naming nothing of the database, and neither
        # the survey nor its event exists
        assert assert_error(response, 500) == INTERNAL_ERROR
        await assert_nothing_written(before)

        # and likewise directly, where the driver's error reaches the caller
        with pytest.raises(refusal.error, match=refusal.match):
            await service.surveys.create_survey(db, client["id"], patient_id="p", answers={})
        await assert_nothing_written(before)


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_refused_event_leaves_the_survey_in_progress(
    isolated_app: Starlette, tolerant_api: httpx.AsyncClient, fault: Fault
) -> None:
    db = _db(isolated_app)
    client = await _client_of(db)
    created = await _create(tolerant_api, client, answers={"q": "before"})
    url = f"{SURVEYS}/{created['id']}"

    async def assert_still_in_progress(before: dict[str, Any]) -> None:
        [row] = await survey_rows(db, client["id"])
        assert (row["status"], row["completed_at"], row["answers"]) == (
            "in_progress",
            None,
            {"q": "before"},
        )
        events = await outbox_rows(db, client["id"])
        assert [event["event_type"] for event in events] == ["survey_created"]
        assert await snapshot(db) == before

    # Given an in-progress survey, and a database that refuses the outbox row of the
    # event that its completion writes
    async with fault(db) as refusal:
        before = await snapshot(db)

        # When it is completed through the API
        response = await tolerant_api.patch(
            url, json={"status": "completed", "answers": {"q": "after"}}, headers=_headers(client)
        )

        # Then the client gets a JSON error, the survey is still in progress with its
        # answers, and only its survey_created event exists
        assert assert_error(response, 500) == INTERNAL_ERROR
        await assert_still_in_progress(before)

        # and likewise directly, where the driver's error reaches the caller
        with pytest.raises(refusal.error, match=refusal.match):
            await service.surveys.complete_survey(db, client["id"], created["id"], answers=None)
        await assert_still_in_progress(before)

    # and once the database takes events again, the survey completes with its event
    done = await tolerant_api.patch(url, json={"status": "completed"}, headers=_headers(client))
    assert done.status_code == 200, done.text
    events = await outbox_rows(db, client["id"])
    assert [event["event_type"] for event in events] == ["survey_created", "survey_finished"]
