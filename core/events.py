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


_EXAMPLE_SURVEY = {
    "id": "5f0c2f8e-3c1a-4f7e-9a59-2d1b7c9e4a10",
    "patient_id": "patient-42",
    "status": "in_progress",
    "answers": {"q1": "yes", "q2": 3},
    "created_at": "2026-01-05T09:30:00Z",
    "completed_at": None,
}


def example_body(event_type: str) -> dict[str, Any]:
    """A request body that a receiver could get for `event_type` (made-up values)."""
    if event_type == PING_EVENT:
        content: dict[str, Any] = {
            "config_id": "0b6f8d2a-8f4e-4d4b-9a1e-6c2f1d3e5a7b",
            "sent_at": "2026-01-05T09:31:00+00:00",
        }
    elif event_type == EventType.SURVEY_FINISHED:
        content = {**_EXAMPLE_SURVEY, "status": "completed", "completed_at": "2026-01-05T09:41:00Z"}
    else:
        content = dict(_EXAMPLE_SURVEY)
    return {"event_type": event_type, "content": content}
