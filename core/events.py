"""The event catalogue (SPEC 6) and the shape of each event's `content`."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from core.timestamps import AnswerTime


class EventType(StrEnum):
    SURVEY_CREATED = "survey_created"
    SURVEY_FINISHED = "survey_finished"


PING_EVENT = "ping"


class Survey(BaseModel):
    """A survey as `GET /api/v2/surveys/{id}` returns it, and as events carry it."""

    model_config = ConfigDict(title="Survey")

    id: str
    patient_id: str
    status: Literal["in_progress", "completed"]
    answers: dict[str, Any]
    created_at: AnswerTime
    completed_at: AnswerTime | None


_DESCRIPTIONS = {
    EventType.SURVEY_CREATED: "A patient survey was created.",
    EventType.SURVEY_FINISHED: "A patient finished the intake survey: its status became completed.",
}


def catalogue() -> list[dict[str, Any]]:
    """`[{"name", "description", "schema"}]`, `schema` being the JSON Schema of `content`."""
    schema = Survey.model_json_schema()
    return [
        {"name": event.value, "description": _DESCRIPTIONS[event], "schema": schema}
        for event in EventType
    ]


def event_body(event_type: str, content: dict[str, Any]) -> str:
    """The exact request body a receiver gets: `{"event_type": ..., "content": ...}`."""
    return json.dumps({"event_type": event_type, "content": content}, separators=(",", ":"))
