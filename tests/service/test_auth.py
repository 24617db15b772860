"""SPEC 3: Bearer authentication on every /api/v2 route, and tenant isolation."""

from __future__ import annotations

import uuid

import httpx
import pytest
from starlette.applications import Starlette

from core.clients import create_client, revoke_client
from tests.conftest import NewClient
from tests.service.support import (
    CONFIGS,
    api_operations,
    assert_error,
    config_body,
    create_config,
    fill_path,
    snapshot,
)

CONFIG_OPERATIONS = {
    ("GET", CONFIGS),
    ("POST", CONFIGS),
    ("GET", CONFIGS + "/{config_id}"),
    ("PATCH", CONFIGS + "/{config_id}"),
    ("DELETE", CONFIGS + "/{config_id}"),
    ("GET", CONFIGS + "/{config_id}/secret"),
    ("POST", CONFIGS + "/{config_id}/secret/rotate"),
    ("GET", "/api/v2/event-types"),
}


def _body(method: str) -> dict[str, object] | None:
    return config_body() if method in ("POST", "PATCH") else None


async def _assert_every_route_refuses(
    app: Starlette, api: httpx.AsyncClient, headers: dict[str, str], message: str
) -> None:
    """Every /api/v2 route (walked from the app) answers 401 with the challenge."""
    before = await snapshot(app.state.db)
    operations = api_operations(app)
    assert set(operations) >= CONFIG_OPERATIONS, operations
    for method, path in operations:
        url = fill_path(path, str(uuid.uuid4()))
        response = await api.request(method, url, json=_body(method), headers=headers)
        assert_error(response, 401)
        assert response.headers.get("www-authenticate") == "Bearer", (method, path, message)
        assert response.json()["error"]["code"] == "unauthorized"
    assert await snapshot(app.state.db) == before


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic x",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer whk_unknown-key",
        "Token whk_unknown-key",
        "whk_unknown-key",
    ],
)
async def test_missing_malformed_or_unknown_key_is_401_everywhere(
    app: Starlette, api: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    await _assert_every_route_refuses(app, api, headers, repr(authorization))


async def test_a_valid_key_under_another_scheme_is_401(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    key = auth["Authorization"].removeprefix("Bearer ")
    for authorization in (f"Basic {key}", key, f"Bearer {key} extra", f"Bearer {key}x"):
        await _assert_every_route_refuses(app, api, {"Authorization": authorization}, "")


async def test_revoked_key_is_401_everywhere(
    app: Starlette, api: httpx.AsyncClient, new_client: NewClient
) -> None:
    headers = await new_client()
    client_id = headers.pop("id")
    created = await create_config(api, headers)
    assert await revoke_client(app.state.db, client_id)

    await _assert_every_route_refuses(app, api, headers, "revoked")
    assert_error(await api.get(f"{CONFIGS}/{created['id']}", headers=headers), 401)


async def test_revoking_one_client_leaves_the_others_working(
    app: Starlette, api: httpx.AsyncClient, new_client: NewClient
) -> None:
    kept, revoked = await new_client(), await new_client()
    assert await revoke_client(app.state.db, revoked.pop("id"))
    kept.pop("id")
    assert (await api.get(CONFIGS, headers=kept)).status_code == 200
    assert_error(await api.get(CONFIGS, headers=revoked), 401)


async def test_revoking_twice_or_an_unknown_client_reports_false(app: Starlette) -> None:
    created = await create_client(app.state.db, "twice")
    assert await revoke_client(app.state.db, created["id"])
    assert not await revoke_client(app.state.db, created["id"])
    assert not await revoke_client(app.state.db, str(uuid.uuid4()))


async def test_scheme_is_case_insensitive(api: httpx.AsyncClient, auth: dict[str, str]) -> None:
    key = auth["Authorization"].removeprefix("Bearer ")
    for authorization in (f"bearer {key}", f"BEARER {key}"):
        response = await api.get(CONFIGS, headers={"Authorization": authorization})
        assert response.status_code == 200, authorization


async def test_openapi_and_health_need_no_auth(api: httpx.AsyncClient) -> None:
    for path in ("/api/v2/openapi.json", "/healthz", "/readyz"):
        response = await api.get(path)
        assert response.status_code == 200, (path, response.text)


async def test_api_keys_are_stored_only_as_hashes(app: Starlette) -> None:
    created = await create_client(app.state.db, "hashed")
    rows = await snapshot(app.state.db)
    assert created["api_key"] not in repr(rows["clients"])


# --- tenant isolation -------------------------------------------------------------------


async def test_another_clients_config_answers_like_a_random_id(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str], new_client: NewClient
) -> None:
    owner_config = await create_config(api, auth)
    intruder = await new_client()
    intruder.pop("id")
    before = await snapshot(app.state.db)

    operations = [
        ("GET", "{id}", None),
        ("PATCH", "{id}", {"url": "https://attacker.example/"}),
        ("PATCH", "{id}", {"authorization_token": "stolen-token-0123456789"}),
        ("DELETE", "{id}", None),
        ("GET", "{id}/secret", None),
        ("POST", "{id}/secret/rotate", None),
    ]
    for method, suffix, body in operations:
        answers = []
        for config_id in (owner_config["id"], str(uuid.uuid4())):
            url = f"{CONFIGS}/{suffix.replace('{id}', config_id)}"
            answers.append(await api.request(method, url, json=body, headers=intruder))
        foreign, random = answers
        assert_error(foreign, 404)
        assert (foreign.status_code, foreign.json()) == (random.status_code, random.json()), (
            method,
            suffix,
        )

    assert await snapshot(app.state.db) == before
    assert (await api.get(CONFIGS, headers=intruder)).json() == []
    mine = await api.get(f"{CONFIGS}/{owner_config['id']}", headers=auth)
    assert mine.json()["url"] == owner_config["url"]


async def test_every_route_with_a_config_id_hides_other_clients(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str], new_client: NewClient
) -> None:
    """Walked from the app, so routes added later are held to the same rule."""
    owner_config = await create_config(api, auth)
    intruder = await new_client()
    intruder.pop("id")
    before = await snapshot(app.state.db)
    other_id = str(uuid.uuid4())

    for method, path in api_operations(app):
        if "{config_id}" not in path:
            continue
        answers = []
        for config_id in (owner_config["id"], str(uuid.uuid4())):
            url = fill_path(path.replace("{config_id}", config_id), other_id)
            body = {"subscribed_events": ["survey_finished"]} if method == "PATCH" else {}
            answers.append(await api.request(method, url, json=body, headers=intruder))
        foreign, random = answers
        assert foreign.status_code in (404, 422), (method, path, foreign.text)
        assert (foreign.status_code, foreign.json()) == (random.status_code, random.json()), (
            method,
            path,
        )

    assert await snapshot(app.state.db) == before


async def test_the_list_shows_only_the_clients_own_configs(
    api: httpx.AsyncClient, auth: dict[str, str], new_client: NewClient
) -> None:
    other = await new_client()
    other.pop("id")
    mine = await create_config(api, auth)
    theirs = await create_config(api, other)

    assert [item["id"] for item in (await api.get(CONFIGS, headers=auth)).json()] == [mine["id"]]
    assert [item["id"] for item in (await api.get(CONFIGS, headers=other)).json()] == [theirs["id"]]
