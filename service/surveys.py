"""Surveys and their events: each change and its outbox event commit together (SPEC 7)."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from core.clock import utcnow
from core.database import Database, WriteUnit, record_dict, run_unit
from core.events import EventType, Survey
from core.tables import surveys
from outbox.writer import add_event, event_insert


class SurveyAlreadyCompleted(Exception):
    """Completing a completed survey: a conflict, and no event."""


def survey_view(row: dict[str, Any]) -> dict[str, Any]:
    """The survey as the API returns it and as events carry it."""
    return Survey.model_validate(row).model_dump(mode="json")


async def create_survey(
    db: Database, client_id: str, *, patient_id: str, answers: dict[str, Any]
) -> dict[str, Any]:
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
    async with db.transaction():
        await db.execute(surveys.insert().values(**row))
        await add_event(db, client_id=client_id, event_type=EventType.SURVEY_CREATED, content=view)
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
    changes: dict[str, Any] = {"status": "completed", "completed_at": utcnow()}
    if answers is not None:
        changes["answers"] = answers
    return await run_unit(db, completion(client_id, survey_id, changes))


def completion(
    client_id: str, survey_id: str, changes: dict[str, Any]
) -> WriteUnit[dict[str, Any] | None]:
    """The write unit of `complete_survey`: the survey's update and its event."""
    row = yield (
        surveys.update()
        .where(
            surveys.c.id == survey_id,
            surveys.c.client_id == client_id,
            surveys.c.status == "in_progress",
        )
        .values(**changes)
        .returning(*surveys.c)
    )
    if row is None:
        mine = sa.select(surveys.c.id).where(
            surveys.c.id == survey_id, surveys.c.client_id == client_id
        )
        if (yield mine) is None:
            return None
        raise SurveyAlreadyCompleted(survey_id)
    view = survey_view(record_dict(row))
    yield event_insert(client_id=client_id, event_type=EventType.SURVEY_FINISHED, content=view)
    return view
