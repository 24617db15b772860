"""Surveys (SPEC 7) through the API on both backends, with the outbox rows they write:
one event per change, committed in the same transaction as the change."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

import service.surveys
from core.clock import utcnow
from core.database import Bound, Database, WriteUnit
from outbox.writer import add_event
from tests.conftest import NewClient
from tests.outbox.helpers import outbox_rows, survey_rows
from tests.service.support import assert_error, error_fields, snapshot

SURVEYS = "/api/v2/surveys"
SURVEY_FIELDS = {"id", "patient_id", "status", "answers", "created_at", "completed_at"}


class InjectedFault(Exception):
    """Raised by a test between the survey's write and its event's write."""


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


@pytest.fixture
async def tolerant_api(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """Like `api`, but an unhandled error comes back as the app's 500 response instead
    of being raised into the test."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def _fault_between_the_inserts(
    monkeypatch: pytest.MonkeyPatch, taken_event_id: str
) -> type[Exception]:
    """The creation fails after the survey's insert, before the event's (on PostgreSQL,
    where both are one statement, before it)."""
    original = service.surveys.creation

    def faulty(*args: Any, **options: Any) -> WriteUnit[Any]:
        unit = original(*args, **options)
        statement = next(unit)
        if options["one_statement"]:
            raise InjectedFault("before the write")
        yield statement
        raise InjectedFault("after the survey's insert")

    monkeypatch.setattr(service.surveys, "creation", faulty)
    return InjectedFault


def _creation_event_refused(
    monkeypatch: pytest.MonkeyPatch, taken_event_id: str
) -> type[Exception]:
    """The database refuses the event (its id is taken) after it inserted the survey (in
    the same statement on PostgreSQL)."""
    original = service.surveys.event_params

    def taken(**values: Any) -> dict[str, Any]:
        return original(**values, event_id=taken_event_id)

    monkeypatch.setattr(service.surveys, "event_params", taken)
    return Exception  # the driver's unique violation


async def _taken_event_id(db: Database) -> str:
    """The id of an event of another client."""
    async with db.transaction():
        return await add_event(db, client_id="another", event_type="survey_created", content={})


FAULTS = [_fault_between_the_inserts, _creation_event_refused]


CompletionFault = Callable[[pytest.MonkeyPatch, str], type[Exception]]


def _completion_fault_before_the_write(
    monkeypatch: pytest.MonkeyPatch, taken_event_id: str
) -> type[Exception]:
    """The completion fails once it has read the survey, before its first write."""
    original = service.surveys.completion

    def faulty(*args: Any, **options: Any) -> WriteUnit[Any]:
        unit, value = original(*args, **options), None
        while True:
            statement = unit.send(value)
            query = statement.statement if isinstance(statement, Bound) else statement
            if not isinstance(query, sa.Select):
                raise InjectedFault("before the write")
            value = yield statement

    monkeypatch.setattr(service.surveys, "completion", faulty)
    return InjectedFault


def _completion_event_refused(
    monkeypatch: pytest.MonkeyPatch, taken_event_id: str
) -> type[Exception]:
    """The database refuses the event (its id is taken) after it made the survey's
    change: a statement of its own on SQLite, part of the one statement on PostgreSQL."""
    original = service.surveys.event_params

    def taken(**values: Any) -> dict[str, Any]:
        return original(**values, event_id=taken_event_id)

    monkeypatch.setattr(service.surveys, "event_params", taken)
    return Exception  # the driver's unique violation


COMPLETION_FAULTS = [_completion_fault_before_the_write, _completion_event_refused]


@pytest.mark.parametrize("inject", FAULTS)
async def test_a_failed_create_through_the_api_leaves_neither_row(
    tolerant_api: httpx.AsyncClient,
    app: Starlette,
    client: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    inject: Any,
) -> None:
    # Given a fault between the survey's insert and the end of its transaction
    inject(monkeypatch, await _taken_event_id(_db(app)))

    # When a survey is created
    response = await tolerant_api.post(SURVEYS, json={"patient_id": "p"}, headers=_headers(client))

    # Then the client gets an error and neither the survey nor its event exists
    assert assert_error(response, 500)["code"] == "internal_error"
    assert "InjectedFault" not in response.text and "unique" not in response.text.lower()
    assert await survey_rows(_db(app), client["id"]) == []
    assert await outbox_rows(_db(app), client["id"]) == []


@pytest.mark.parametrize("inject", FAULTS)
async def test_a_failed_create_leaves_neither_row(
    app: Starlette, client: dict[str, str], monkeypatch: pytest.MonkeyPatch, inject: Any
) -> None:
    raised = inject(monkeypatch, await _taken_event_id(_db(app)))

    with pytest.raises(raised):
        await service.surveys.create_survey(
            _db(app), client["id"], patient_id="p", answers={"q": 1}
        )

    assert await survey_rows(_db(app), client["id"]) == []
    assert await outbox_rows(_db(app), client["id"]) == []


@pytest.mark.parametrize("inject", COMPLETION_FAULTS)
async def test_a_failed_completion_leaves_the_survey_in_progress_and_no_event(
    api: httpx.AsyncClient,
    tolerant_api: httpx.AsyncClient,
    app: Starlette,
    client: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    inject: CompletionFault,
) -> None:
    # Given a survey, and a fault in the transaction that completes it
    created = await _create(api, client, answers={"q": "before"})
    [created_event] = await outbox_rows(_db(app), client["id"])
    raised = inject(monkeypatch, created_event["event_id"])

    # When it is completed, through the API and directly
    response = await tolerant_api.patch(
        f"{SURVEYS}/{created['id']}",
        json={"status": "completed", "answers": {"q": "after"}},
        headers=_headers(client),
    )
    with pytest.raises(raised):
        await service.surveys.complete_survey(_db(app), client["id"], created["id"], answers=None)

    # Then the survey is unchanged and only its survey_created event exists
    assert_error(response, 500)
    monkeypatch.undo()
    shown = await api.get(f"{SURVEYS}/{created['id']}", headers=_headers(client))
    assert shown.json() == created
    [row] = await survey_rows(_db(app), client["id"])
    assert row["status"] == "in_progress"
    assert row["completed_at"] is None
    assert [r["event_type"] for r in await outbox_rows(_db(app), client["id"])] == [
        "survey_created"
    ]
    # and the survey can still be completed, with its event
    done = await api.patch(
        f"{SURVEYS}/{created['id']}", json={"status": "completed"}, headers=_headers(client)
    )
    assert done.status_code == 200, done.text
    assert len(await outbox_rows(_db(app), client["id"])) == 2
