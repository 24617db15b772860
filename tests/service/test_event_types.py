"""SPEC 6: `GET /api/v2/event-types`, the catalogue of events to subscribe to."""

from __future__ import annotations

import httpx
from openapi_schema_validator import OAS31Validator

from tests.service.support import CONFIGS, assert_error, config_body

EVENT_TYPES = "/api/v2/event-types"
SURVEY = {
    "id": "12345678-1234-5678-1234-567812345678",
    "patient_id": "patient-1",
    "status": "completed",
    "answers": {"q1": "yes"},
    "created_at": "2026-01-01T00:00:00Z",
    "completed_at": "2026-01-01T00:05:00Z",
}


SURVEY_EVENTS = ["survey_created", "survey_finished"]
OPERATIONAL_EVENTS = ["webhook_disabled", "webhook_enabled", "delivery_failed"]
# SPEC 15: the fields of each operational event's content.
OPERATIONAL_FIELDS = {
    "webhook_disabled": {"config_id", "url", "disabled_reason", "at"},
    "webhook_enabled": {"config_id", "url", "released", "at"},
    "delivery_failed": {
        "config_id",
        "delivery_id",
        "event_id",
        "event_type",
        "attempts",
        "last_error",
        "last_status_code",
        "at",
    },
}


async def test_catalogue_lists_every_event_with_description_and_schema(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await api.get(EVENT_TYPES, headers=auth)

    assert response.status_code == 200, response.text
    catalogue = response.json()
    assert sorted(item["name"] for item in catalogue) == sorted(SURVEY_EVENTS + OPERATIONAL_EVENTS)
    for item in catalogue:
        assert set(item) == {"name", "description", "schema"}, item
        assert isinstance(item["description"], str) and item["description"].strip()
        schema = item["schema"]
        assert isinstance(schema, dict) and schema.get("type") == "object", schema
        OAS31Validator.check_schema(schema)
        expected = OPERATIONAL_FIELDS.get(item["name"], set(SURVEY))
        assert set(schema["properties"]) == expected, schema
        assert set(schema["required"]) == expected, schema


async def test_each_survey_schema_accepts_a_survey_and_refuses_garbage(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for item in (await api.get(EVENT_TYPES, headers=auth)).json():
        if item["name"] not in SURVEY_EVENTS:
            continue
        validator = OAS31Validator(item["schema"])
        validator.validate(SURVEY)
        validator.validate({**SURVEY, "status": "in_progress", "completed_at": None})
        assert not validator.is_valid({"id": 1})
        assert not validator.is_valid({**SURVEY, "status": "unknown"})


async def test_catalogue_needs_auth(api: httpx.AsyncClient) -> None:
    assert_error(await api.get(EVENT_TYPES), 401)


async def test_every_catalogued_event_can_be_subscribed_and_nothing_else(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    names = [item["name"] for item in (await api.get(EVENT_TYPES, headers=auth)).json()]
    response = await api.post(CONFIGS, json=config_body(subscribed_events=names), headers=auth)
    assert response.status_code == 201, response.text
    assert response.json()["subscribed_events"] == names
    refused = await api.post(CONFIGS, json=config_body(subscribed_events=["ping"]), headers=auth)
    assert_error(refused, 422)
