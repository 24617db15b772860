"""`signature_scheme` (SPEC 16) through the API, on both backends: a `v1a` configuration
shows its public key where a `v1` one shows its secret, and never its private key."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from core.signing_keys import public_key
from tests.service.support import (
    CONFIGS,
    assert_error,
    config_row,
    create_config,
    error_fields,
)


def _no_private_key(response: httpx.Response, row: dict[str, Any]) -> None:
    for stored in (row["signing_secret"], row["previous_signing_secret"]):
        if stored and stored.startswith("whsk_"):
            assert stored.removeprefix("whsk_") not in response.text


async def test_create_v1a_answers_the_public_key(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await api.post(CONFIGS, json={**_body(), "signature_scheme": "v1a"}, headers=auth)

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["signature_scheme"] == "v1a"
    assert "signing_secret" not in created
    row = await config_row(app.state.db, created["id"])
    assert row["signature_scheme"] == "v1a"
    assert row["signing_secret"].startswith("whsk_")
    assert created["signing_public_key"] == public_key(row["signing_secret"])
    _no_private_key(response, row)


async def test_the_default_scheme_is_v1(api: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await create_config(api, auth)

    assert created["signature_scheme"] == "v1"
    assert created["signing_secret"].startswith("whsec_")
    assert "signing_public_key" not in created


async def test_reads_show_the_scheme_and_no_key(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth, signature_scheme="v1a")

    one = (await api.get(f"{CONFIGS}/{created['id']}", headers=auth)).json()
    [listed] = (await api.get(CONFIGS, headers=auth)).json()

    for view in (one, listed):
        assert view["signature_scheme"] == "v1a"
        assert "signing_public_key" not in view and "signing_secret" not in view


async def test_get_secret_of_v1a_is_the_public_key(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth, signature_scheme="v1a")

    response = await api.get(f"{CONFIGS}/{created['id']}/secret", headers=auth)

    assert response.status_code == 200
    assert response.json() == {"signing_public_key": created["signing_public_key"]}
    _no_private_key(response, await config_row(app.state.db, created["id"]))


async def test_rotating_a_v1a_key_keeps_the_old_one_signing(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth, signature_scheme="v1a")
    before = await config_row(app.state.db, created["id"])

    response = await api.post(f"{CONFIGS}/{created['id']}/secret/rotate", headers=auth)

    assert response.status_code == 200, response.text
    row = await config_row(app.state.db, created["id"])
    assert row["signing_secret"].startswith("whsk_")
    assert row["previous_signing_secret"] == before["signing_secret"]
    assert response.json() == {"signing_public_key": public_key(row["signing_secret"])}
    assert response.json() != {"signing_public_key": created["signing_public_key"]}
    _no_private_key(response, row)


@pytest.mark.parametrize(("start", "switch_to"), [("v1", "v1a"), ("v1a", "v1")])
async def test_patch_switching_the_scheme_makes_a_key_of_the_new_kind(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str], start: str, switch_to: str
) -> None:
    created = await create_config(api, auth, signature_scheme=start)
    before = await config_row(app.state.db, created["id"])

    response = await api.patch(
        f"{CONFIGS}/{created['id']}", json={"signature_scheme": switch_to}, headers=auth
    )

    assert response.status_code == 200, response.text
    row = await config_row(app.state.db, created["id"])
    assert row["signature_scheme"] == switch_to
    assert row["signing_secret"].startswith("whsk_" if switch_to == "v1a" else "whsec_")
    # The old key, of the old kind, keeps signing for 24 hours.
    assert row["previous_signing_secret"] == before["signing_secret"]
    assert row["previous_secret_expires_at"] is not None
    expected = (
        {"signing_public_key": public_key(row["signing_secret"])}
        if switch_to == "v1a"
        else {"signing_secret": row["signing_secret"]}
    )
    assert response.json()["signature_scheme"] == switch_to
    assert expected.items() <= response.json().items()
    _no_private_key(response, row)


async def test_patch_with_the_same_scheme_keeps_the_key(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth, signature_scheme="v1a")
    before = await config_row(app.state.db, created["id"])

    response = await api.patch(
        f"{CONFIGS}/{created['id']}", json={"signature_scheme": "v1a"}, headers=auth
    )

    assert response.status_code == 200, response.text
    assert "signing_public_key" not in response.json()
    row = await config_row(app.state.db, created["id"])
    assert row["signing_secret"] == before["signing_secret"]
    assert row["previous_signing_secret"] is None


@pytest.mark.parametrize("scheme", ["v2", "V1A", "", 1, None])
async def test_an_unknown_scheme_is_a_422_naming_the_field(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str], scheme: Any
) -> None:
    created = await create_config(api, auth)

    on_create = await api.post(CONFIGS, json={**_body(), "signature_scheme": scheme}, headers=auth)
    on_patch = await api.patch(
        f"{CONFIGS}/{created['id']}", json={"signature_scheme": scheme}, headers=auth
    )

    for response in (on_create, on_patch):
        assert_error(response, 422)
        assert error_fields(response) == ["signature_scheme"]
    row = await config_row(app.state.db, created["id"])
    assert row["signing_secret"] == created["signing_secret"]


def _body() -> dict[str, Any]:
    return {"url": "https://example.com/hook", "subscribed_events": ["survey_created"]}
