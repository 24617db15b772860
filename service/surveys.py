"""Surveys and their events: each change and its outbox event commit together (SPEC 7)."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.database import Bound, Database, WriteUnit, record_dict, run_unit
from core.events import EventType, Survey
from core.tables import surveys
from outbox.writer import event_insert, event_params, insert_event_if


class SurveyAlreadyCompleted(Exception):
    """Completing a completed survey: a conflict, and no event."""


def survey_view(row: dict[str, Any]) -> dict[str, Any]:
    """The survey as the API returns it and as events carry it."""
    return Survey.model_validate(row).model_dump(mode="json")


async def create_survey(
    db: Database, client_id: str, *, patient_id: str, answers: dict[str, Any]
) -> dict[str, Any]:
    one_statement = db.url.dialect == "postgresql"
    unit = creation(client_id, patient_id, answers, one_statement=one_statement)
    return await run_unit(db, unit, one_write=one_statement)


_SURVEY_COLUMNS = ("id", "client_id", "patient_id", "status", "answers", "created_at")
_INSERT_SURVEY = surveys.insert().values({name: sa.bindparam(name) for name in _SURVEY_COLUMNS})
_INSERT_SURVEY_WITH_EVENT = insert_event_if(_INSERT_SURVEY.returning(surveys.c.id))


def creation(
    client_id: str, patient_id: str, answers: dict[str, Any], *, one_statement: bool
) -> WriteUnit[dict[str, Any]]:
    """The write unit of `create_survey`: the survey and its `survey_created` event, in
    one statement if `one_statement` (PostgreSQL)."""
    row = {
        "id": str(uuid.uuid4()),
        "client_id": client_id,
        "patient_id": patient_id,
        "status": "in_progress",
        "answers": answers,
        "created_at": utcnow(),
        "completed_at": None,
    }
    view = survey_view(row)
    event = event_params(client_id=client_id, event_type=EventType.SURVEY_CREATED, content=view)
    values = {name: row[name] for name in _SURVEY_COLUMNS}
    if one_statement:
        yield Bound(_INSERT_SURVEY_WITH_EVENT, values | event)
    else:
        yield Bound(_INSERT_SURVEY, values)
        yield event_insert(event)
    return view


async def get_survey(db: Database, client_id: str, survey_id: str) -> dict[str, Any] | None:
    row = await db.fetch_one(
        sa.select(surveys).where(surveys.c.id == survey_id, surveys.c.client_id == client_id)
    )
    return survey_view(record_dict(row)) if row is not None else None


async def complete_survey(
    db: Database, client_id: str, survey_id: str, *, answers: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Mark the survey completed and emit `survey_finished`; None if not the client's.
    Raises `SurveyAlreadyCompleted` (nothing written) if it was completed already."""
    one_statement = db.url.dialect == "postgresql"
    unit = completion(client_id, survey_id, answers, one_statement=one_statement)
    return await run_unit(db, unit, one_write=one_statement)


def _completion_update(*, with_answers: bool) -> sa.Update:
    changes: dict[str, Any] = {"status": "completed", "completed_at": sa.bindparam("now")}
    if with_answers:
        changes["answers"] = sa.bindparam("new_answers")
    # The status guard makes a completion that raced another one change nothing.
    return (
        surveys.update()
        .where(
            surveys.c.id == sa.bindparam("survey_id"),
            surveys.c.client_id == sa.bindparam("client_id"),
            surveys.c.status == "in_progress",
        )
        .values(changes)
        .returning(surveys.c.id)
    )


_SURVEY = sa.select(surveys).where(
    surveys.c.id == sa.bindparam("survey_id"), surveys.c.client_id == sa.bindparam("client_id")
)
# By whether answers are given; and the same with the event in one statement.
_UPDATES = {answers: _completion_update(with_answers=answers) for answers in (False, True)}
_UPDATES_WITH_EVENT = {answers: insert_event_if(update) for answers, update in _UPDATES.items()}


def completion(
    client_id: str, survey_id: str, answers: dict[str, Any] | None, *, one_statement: bool
) -> WriteUnit[dict[str, Any] | None]:
    """The write unit of `complete_survey`: read the survey, then write its completion
    and its event, in one statement if `one_statement` (PostgreSQL).

    The event is built from the row as read: an in-progress survey changes only by its
    completion (SPEC 7), and the write's status guard changes nothing if one happened
    since the read (possible on PostgreSQL, where the read is outside the write)."""
    ids = {"survey_id": survey_id, "client_id": client_id}
    row = yield Bound(_SURVEY, ids)
    if row is None:
        return None
    survey = record_dict(row)
    if survey["status"] != "in_progress":
        raise SurveyAlreadyCompleted(survey_id)
    now = utcnow()
    survey.update(status="completed", completed_at=now)
    if answers is not None:
        survey["answers"] = answers
    view = survey_view(survey)
    event = event_params(client_id=client_id, event_type=EventType.SURVEY_FINISHED, content=view)
    params = {**ids, "now": now, **event}
    if answers is not None:
        params["new_answers"] = answers
    update = (_UPDATES_WITH_EVENT if one_statement else _UPDATES)[answers is not None]
    done = yield Bound(update, params)
    if done is None:
        raise SurveyAlreadyCompleted(survey_id)
    if not one_statement:
        yield event_insert(event)
    return view
