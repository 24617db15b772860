"""The delivery controls of a configuration (SPEC 13) through the API: accepted on
create and PATCH, returned everywhere with their defaults, null restores a default,
and every invalid value is a 422 that names the field and changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.service.support import (
    CONFIGS,
    assert_error,
    config_body,
    create_config,
    error_fields,
    snapshot,
)

CONTROLS = {
    "filter": "content.answers.q1 == 'yes'",
    "ordering": "fifo",
    "rate_limit_per_s": 20,
    "max_in_flight": 2,
    "headers": {"X-Api-Key": "k 1", "x-tenant": "acme"},
    "payload": "thin",
}
DEFAULTS = {
    "filter": None,
    "ordering": "none",
    "rate_limit_per_s": None,
    "max_in_flight": None,
    "headers": {},
    "payload": "full",
}


async def test_create_stores_and_returns_every_control(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth, **CONTROLS)

    fetched = (await api.get(f"{CONFIGS}/{created['id']}", headers=auth)).json()
    listed = (await api.get(CONFIGS, headers=auth)).json()

    for view in (created, fetched, listed[0]):
        assert {key: view[key] for key in CONTROLS} == CONTROLS


async def test_a_configuration_without_controls_shows_the_defaults(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth)

    assert {key: created[key] for key in DEFAULTS} == DEFAULTS


async def test_patch_changes_a_control_and_null_restores_its_default(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth, **CONTROLS)
    one = f"{CONFIGS}/{created['id']}"

    changed = await api.patch(one, json={"rate_limit_per_s": 5}, headers=auth)
    reset = await api.patch(one, json=dict.fromkeys(CONTROLS), headers=auth)

    assert changed.status_code == 200, changed.text
    assert {key: changed.json()[key] for key in CONTROLS} == {**CONTROLS, "rate_limit_per_s": 5}
    assert reset.status_code == 200, reset.text
    assert {key: reset.json()[key] for key in DEFAULTS} == DEFAULTS
    fetched = (await api.get(one, headers=auth)).json()
    assert {key: fetched[key] for key in DEFAULTS} == DEFAULTS


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("filter", "content.answers.q1 =="),
        ("filter", "a ~ b"),
        ("filter", ""),
        ("filter", 5),
        ("filter", "(" * 2000),
        ("ordering", "lifo"),
        ("rate_limit_per_s", 0),
        ("rate_limit_per_s", 10_001),
        ("rate_limit_per_s", "20"),
        ("rate_limit_per_s", 2.5),
        ("max_in_flight", 0),
        ("max_in_flight", 257),
        ("payload", "none"),
        ("headers", {"Bad Name": "x"}),
        ("headers", {"x-a": "1", "X-A": "2"}),
        ("headers", {"Content-Type": "text/plain"}),
        ("headers", {"HOST": "x"}),
        ("headers", {"User-Agent": "x"}),
        ("headers", {"TraceParent": "x"}),
        ("headers", {"X-Webhook-Infermedica-Token": "x"}),
        ("headers", {"Webhook-Signature": "x"}),
        ("headers", {"webhook-anything": "x"}),
        ("headers", {"x-a": "é"}),
        ("headers", {"x-a": "line\nbreak"}),
        ("headers", {"x-a": "x" * 1025}),
        ("headers", {"x-a": 5}),
        ("headers", {f"x-{n}": "v" for n in range(21)}),
        ("headers", ["x-a"]),
    ],
)
async def test_an_invalid_control_is_a_422_naming_it_and_changes_nothing(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str], field: str, value: Any
) -> None:
    created = await create_config(api, auth)
    before = await snapshot(app.state.db)

    made = await api.post(CONFIGS, json=config_body(**{field: value}), headers=auth)
    patched = await api.patch(f"{CONFIGS}/{created['id']}", json={field: value}, headers=auth)

    for response in (made, patched):
        assert any(name.startswith(field) for name in error_fields(response)), response.text
    assert await snapshot(app.state.db) == before


async def test_a_filter_that_does_not_compile_names_the_position(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await api.post(
        CONFIGS, json=config_body(filter="content.answers.q1 =="), headers=auth
    )

    error = assert_error(response, 422)
    [detail] = error["details"]
    assert "position 21" in detail["message"], detail


async def test_the_largest_valid_header_set_is_accepted(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    headers = {f"X-{n}": " " + "~" * 1023 for n in range(20)}

    created = await create_config(api, auth, headers=headers)

    assert created["headers"] == headers
