"""Surveys and their events: each change and its outbox event commit together (SPEC 7).

`create_survey` and `complete_survey` are the fast paths; `creating` and `completing`
are the same writes as write units that give the request's whole answer, for requests
with an `Idempotency-Key` (`service.idempotency.once` runs them after claiming the key,
in the same transaction).
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.database import Database, Query, WriteUnit, fetch_one
from core.events import EventType, Survey
from core.tables import surveys
from outbox.writer import event_insert, event_params, write_with_event
from service.errors import error_document
from service.idempotency import Answer

NO_SURVEY = "no such survey"
ALREADY_COMPLETED = "the survey is already completed"


class SurveyAlreadyCompleted(Exception):
    """Completing a completed survey: a conflict, and no event."""


def survey_view(row: dict[str, Any]) -> dict[str, Any]:
    """The survey as the API returns it and as events carry it."""
    return Survey.model_validate(row).model_dump(mode="json")


def _new_survey(client_id: str, patient_id: str, answers: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "client_id": client_id,
        "patient_id": patient_id,
        "status": "in_progress",
        "answers": answers,
        "created_at": utcnow(),
        "completed_at": None,
    }


async def create_survey(
    db: Database,
    client_id: str,
    *,
    patient_id: str,
    answers: dict[str, Any],
    traceparent: str | None = None,
) -> dict[str, Any]:
    """The survey and its `survey_created` event, committed together; the event carries
    `traceparent`, the request's trace context (SPEC 17)."""
    row = _new_survey(client_id, patient_id, answers)
    view = survey_view(row)
    event = _created(client_id, view, traceparent)
    values = {name: row[name] for name in _SURVEY_COLUMNS}
    await write_with_event(db, _INSERT_SURVEY, values, event)
    return view


def creating(
    client_id: str, *, patient_id: str, answers: dict[str, Any], traceparent: str | None = None
) -> WriteUnit[Answer]:
    """`create_survey` as a write unit: its answer, `201` and the survey. (A unit may run
    on another thread: the trace context is given, never read from the current one.)"""
    row = _new_survey(client_id, patient_id, answers)
    view = survey_view(row)
    event = _created(client_id, view, traceparent)
    yield Query(_INSERT_SURVEY, {name: row[name] for name in _SURVEY_COLUMNS})
    yield event_insert(event)
    return Answer.of(201, view)


_SURVEY_COLUMNS = ("id", "client_id", "patient_id", "status", "answers", "created_at")
_INSERT_SURVEY = (
    surveys.insert()
    .values({name: sa.bindparam(name) for name in _SURVEY_COLUMNS})
    .returning(surveys.c.id)
)


async def get_survey(db: Database, client_id: str, survey_id: str) -> dict[str, Any] | None:
    row = await fetch_one(db, _SURVEY, {"survey_id": survey_id, "client_id": client_id})
    return survey_view(row) if row is not None else None


async def complete_survey(
    db: Database,
    client_id: str,
    survey_id: str,
    *,
    answers: dict[str, Any] | None,
    traceparent: str | None = None,
) -> dict[str, Any] | None:
    """Mark the survey completed and emit `survey_finished` (carrying `traceparent`);
    None if not the client's.
    Raises `SurveyAlreadyCompleted` (nothing written) if it was completed already.

    The event is built from the row as read: an in-progress survey changes only by its
    completion (SPEC 7), and the write's status guard changes nothing if one happened
    since the read."""
    ids = {"survey_id": survey_id, "client_id": client_id}
    survey = await fetch_one(db, _SURVEY, ids)
    if survey is None:
        return None
    if survey["status"] != "in_progress":
        raise SurveyAlreadyCompleted(survey_id)
    now = utcnow()
    survey.update(status="completed", completed_at=now)
    if answers is not None:
        survey["answers"] = answers
    view = survey_view(survey)
    event = _finished(client_id, view, traceparent)
    values = {**ids, "now": now, "read_patient_id": survey["patient_id"]}
    if answers is not None:
        values["new_answers"] = answers
    if not await write_with_event(db, _UPDATES[answers is not None], values, event):
        raise SurveyAlreadyCompleted(survey_id)
    return view


def completing(
    client_id: str,
    survey_id: str,
    *,
    answers: dict[str, Any] | None,
    traceparent: str | None = None,
) -> WriteUnit[Answer]:
    """`complete_survey` as a write unit: its answer, `200` and the survey, or the
    `404` or `409` error (nothing written)."""
    ids = {"survey_id": survey_id, "client_id": client_id}
    found = yield Query(_SURVEY, ids)
    if not found:
        return Answer.of(404, error_document("not_found", NO_SURVEY))
    survey = found[0]
    if survey["status"] != "in_progress":
        return Answer.of(409, error_document("conflict", ALREADY_COMPLETED))
    now = utcnow()
    survey.update(status="completed", completed_at=now)
    values: dict[str, Any] = {**ids, "now": now, "read_patient_id": survey["patient_id"]}
    if answers is not None:
        survey["answers"] = values["new_answers"] = answers
    view = survey_view(survey)
    # The status guard: a completion that committed since the read changes nothing here.
    if not (yield Query(_UPDATES[answers is not None], values)):
        return Answer.of(409, error_document("conflict", ALREADY_COMPLETED))
    yield event_insert(_finished(client_id, view, traceparent))
    return Answer.of(200, view)


def _event(
    event_type: EventType, client_id: str, view: dict[str, Any], traceparent: str | None
) -> dict[str, Any]:
    return event_params(
        client_id=client_id, event_type=event_type, content=view, traceparent=traceparent
    )


def _created(client_id: str, view: dict[str, Any], traceparent: str | None) -> dict[str, Any]:
    return _event(EventType.SURVEY_CREATED, client_id, view, traceparent)


def _finished(client_id: str, view: dict[str, Any], traceparent: str | None) -> dict[str, Any]:
    return _event(EventType.SURVEY_FINISHED, client_id, view, traceparent)


def _completion_update(*, with_answers: bool) -> sa.Update:
    changes: dict[str, Any] = {"status": "completed", "completed_at": sa.bindparam("now")}
    if with_answers:
        changes["answers"] = sa.bindparam("new_answers")
    # The status guard makes a completion that raced another one change nothing; the
    # patient guard, one that raced an erasure (`core.erasures`): its event, built from
    # the row as read, would carry the erased patient's data again.
    return (
        surveys.update()
        .where(
            surveys.c.id == sa.bindparam("survey_id"),
            surveys.c.client_id == sa.bindparam("client_id"),
            surveys.c.status == "in_progress",
            surveys.c.patient_id == sa.bindparam("read_patient_id"),
        )
        .values(changes)
        .returning(surveys.c.id)
    )


_SURVEY = sa.select(surveys).where(
    surveys.c.id == sa.bindparam("survey_id"), surveys.c.client_id == sa.bindparam("client_id")
)
# By whether answers are given.
_UPDATES = {answers: _completion_update(with_answers=answers) for answers in (False, True)}
