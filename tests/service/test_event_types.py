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


async def test_catalogue_lists_both_events_with_description_and_schema(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await api.get(EVENT_TYPES, headers=auth)

    assert response.status_code == 200, response.text
    catalogue = response.json()
    assert sorted(item["name"] for item in catalogue) == ["survey_created", "survey_finished"]
    for item in catalogue:
        assert set(item) == {"name", "description", "schema"}, item
        assert isinstance(item["description"], str) and item["description"].strip()
        schema = item["schema"]
        assert isinstance(schema, dict) and schema.get("type") == "object", schema
        OAS31Validator.check_schema(schema)
        assert set(schema["properties"]) >= set(SURVEY), schema


async def test_each_schema_accepts_a_survey_and_refuses_garbage(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for item in (await api.get(EVENT_TYPES, headers=auth)).json():
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
