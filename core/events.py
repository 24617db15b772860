"""The event catalogue (SPEC 6) and the shape of each event's `content`."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from core.timestamps import AnswerTime


class EventType(StrEnum):
    SURVEY_CREATED = "survey_created"
    SURVEY_FINISHED = "survey_finished"
    WEBHOOK_DISABLED = "webhook_disabled"
    WEBHOOK_ENABLED = "webhook_enabled"
    DELIVERY_FAILED = "delivery_failed"


SURVEY_EVENTS = frozenset({EventType.SURVEY_CREATED, EventType.SURVEY_FINISHED})
OPERATIONAL_EVENTS = frozenset(
    {EventType.WEBHOOK_DISABLED, EventType.WEBHOOK_ENABLED, EventType.DELIVERY_FAILED}
)
"""SPEC 15: about the client's own configurations, sent to its other ones."""


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


class WebhookDisabled(BaseModel):
    model_config = ConfigDict(title="WebhookDisabled")

    config_id: str
    url: str
    disabled_reason: Literal["gone", "failing", "manual"]
    at: datetime


class WebhookEnabled(BaseModel):
    model_config = ConfigDict(title="WebhookEnabled")

    config_id: str
    url: str
    released: int
    at: datetime


class DeliveryFailed(BaseModel):
    model_config = ConfigDict(title="DeliveryFailed")

    config_id: str
    delivery_id: str
    event_id: str
    event_type: str
    attempts: int
    last_error: str | None
    last_status_code: int | None
    at: datetime


_CONTENT: dict[EventType, type[BaseModel]] = {
    EventType.SURVEY_CREATED: Survey,
    EventType.SURVEY_FINISHED: Survey,
    EventType.WEBHOOK_DISABLED: WebhookDisabled,
    EventType.WEBHOOK_ENABLED: WebhookEnabled,
    EventType.DELIVERY_FAILED: DeliveryFailed,
}
_DESCRIPTIONS = {
    EventType.SURVEY_CREATED: "A patient survey was created.",
    EventType.SURVEY_FINISHED: "A patient finished the intake survey: its status became completed.",
    EventType.WEBHOOK_DISABLED: (
        "Another of your webhook configurations was disabled: its endpoint answered 410, "
        "kept failing, or you disabled it."
    ),
    EventType.WEBHOOK_ENABLED: (
        "Another of your webhook configurations was enabled again; `released` counts the "
        "held deliveries it sends now."
    ),
    EventType.DELIVERY_FAILED: (
        "A delivery to another of your webhook configurations failed for good: every "
        "attempt failed (not sent for deliveries of operational events)."
    ),
}


def catalogue() -> list[dict[str, Any]]:
    """`[{"name", "description", "schema"}]`, `schema` being the JSON Schema of `content`."""
    return [
        {
            "name": event.value,
            "description": _DESCRIPTIONS[event],
            "schema": _CONTENT[event].model_json_schema(),
        }
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


_EXAMPLE_CONFIG = {
    "config_id": "0b6f8d2a-8f4e-4d4b-9a1e-6c2f1d3e5a7b",
    "url": "https://clinic.example/webhooks",
}
_EXAMPLE_OPERATIONAL: dict[str, dict[str, Any]] = {
    EventType.WEBHOOK_DISABLED: {
        **_EXAMPLE_CONFIG,
        "disabled_reason": "gone",
        "at": "2026-01-05T09:32:00+00:00",
    },
    EventType.WEBHOOK_ENABLED: {
        **_EXAMPLE_CONFIG,
        "released": 12,
        "at": "2026-01-05T10:02:00+00:00",
    },
    EventType.DELIVERY_FAILED: {
        "config_id": _EXAMPLE_CONFIG["config_id"],
        "delivery_id": "9d1c6a3e-2b7f-4c1a-8e5d-3f2a1b0c9d8e",
        "event_id": "4a3b2c1d-0e9f-4a8b-9c7d-6e5f4a3b2c1d",
        "event_type": "survey_finished",
        "attempts": 8,
        "last_error": "connection refused",
        "last_status_code": None,
        "at": "2026-01-06T09:41:00+00:00",
    },
}


def example_body(event_type: str) -> dict[str, Any]:
    """A request body that a receiver could get for `event_type` (made-up values)."""
    if event_type == PING_EVENT:
        content: dict[str, Any] = {
            "config_id": "0b6f8d2a-8f4e-4d4b-9a1e-6c2f1d3e5a7b",
            "sent_at": "2026-01-05T09:31:00+00:00",
        }
    elif event_type in _EXAMPLE_OPERATIONAL:
        content = _EXAMPLE_OPERATIONAL[event_type]
    elif event_type == EventType.SURVEY_FINISHED:
        content = {**_EXAMPLE_SURVEY, "status": "completed", "completed_at": "2026-01-05T09:41:00Z"}
    else:
        content = dict(_EXAMPLE_SURVEY)
    return {"event_type": event_type, "content": content}
