"""Webhook configurations, SPEC 5 exactly (and SPEC 6's secrets), on both backends."""

from __future__ import annotations

import asyncio
import base64
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook
from starlette.applications import Starlette

from core.clients import create_client
from core.clock import utcnow
from core.database import open_database
from core.tables import deliveries, webhook_configs
from service.app import create_app
from tests.conftest import NewClient, make_settings
from tests.service.support import (
    CONFIGS,
    PUBLIC_URL,
    SEED_TOKEN,
    assert_error,
    config_body,
    config_row,
    create_config,
    error_fields,
    snapshot,
)

# The delivery controls (SPEC 13), in every configuration response.
CONTROL_FIELDS = {"filter", "ordering", "rate_limit_per_s", "max_in_flight", "headers", "payload"}
CREATED_FIELDS = CONTROL_FIELDS | {
    "id",
    "url",
    "authorization_token",
    "subscribed_events",
    "signing_secret",
    "enabled",
    "signature_scheme",
}
VIEW_FIELDS = CONTROL_FIELDS | {"id", "url", "subscribed_events", "enabled", "signature_scheme"}
DEFAULT_CONTROLS = {
    "filter": None,
    "ordering": "none",
    "rate_limit_per_s": None,
    "max_in_flight": None,
    "headers": {},
    "payload": "full",
}
TOKEN_RULE = re.compile(r"[\x21-\x7e]{16,256}")


def _assert_signing_secret(secret: str) -> None:
    assert secret.startswith("whsec_"), secret
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    Webhook(secret)  # the official library accepts it as it is


# --- create -------------------------------------------------------------------------


async def test_create_returns_the_configuration_with_token_and_secret(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await api.post(CONFIGS, json=config_body(), headers=auth)

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == CREATED_FIELDS
    assert uuid.UUID(body["id"])
    assert body["url"] == PUBLIC_URL
    assert body["authorization_token"] == SEED_TOKEN
    assert body["subscribed_events"] == ["survey_created"]
    assert body["enabled"] is True
    _assert_signing_secret(body["signing_secret"])


async def test_create_generates_a_strong_token_when_omitted(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    body = config_body()
    del body["authorization_token"]
    first = await api.post(CONFIGS, json=body, headers=auth)
    second = await api.post(CONFIGS, json=body, headers=auth)

    assert first.status_code == second.status_code == 201
    tokens = [first.json()["authorization_token"], second.json()["authorization_token"]]
    for token in tokens:
        assert TOKEN_RULE.fullmatch(token), token
        assert len(token) >= 32
    assert tokens[0] != tokens[1]
    assert first.json()["signing_secret"] != second.json()["signing_secret"]


async def test_create_stores_what_it_returns(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth, subscribed_events=["survey_finished"])

    row = await config_row(app.state.db, created["id"])
    assert row["url"] == created["url"]
    assert row["authorization_token"] == created["authorization_token"]
    assert row["signing_secret"] == created["signing_secret"]
    assert row["subscribed_events"] == ["survey_finished"]
    assert row["previous_signing_secret"] is None


async def test_token_boundaries_are_accepted(api: httpx.AsyncClient, auth: dict[str, str]) -> None:
    for token in ("a" * 16, "!" + "~" * 255):
        created = await create_config(api, auth, authorization_token=token)
        assert created["authorization_token"] == token


async def test_url_of_2048_characters_is_accepted(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    url = PUBLIC_URL + "/" + "a" * (2048 - len(PUBLIC_URL) - 1)
    assert len(url) == 2048
    created = await create_config(api, auth, url=url)
    assert created["url"] == url


async def test_duplicate_events_are_folded(api: httpx.AsyncClient, auth: dict[str, str]) -> None:
    events = ["survey_finished", "survey_created", "survey_finished", "survey_created"]
    created = await create_config(api, auth, subscribed_events=events)
    assert created["subscribed_events"] == ["survey_finished", "survey_created"]

    fetched = await api.get(f"{CONFIGS}/{created['id']}", headers=auth)
    assert fetched.json()["subscribed_events"] == ["survey_finished", "survey_created"]


# --- update -------------------------------------------------------------------------


async def test_patch_non_token_fields_omits_the_token(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth)
    new_url = "https://example.org/other"

    response = await api.patch(
        f"{CONFIGS}/{created['id']}",
        json={"url": new_url, "subscribed_events": ["survey_finished"]},
        headers=auth,
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": created["id"],
        "url": new_url,
        "subscribed_events": ["survey_finished"],
        "enabled": True,
        "signature_scheme": "v1",
        **DEFAULT_CONTROLS,
    }
    row = await config_row(app.state.db, created["id"])
    assert row["authorization_token"] == SEED_TOKEN
    assert row["signing_secret"] == created["signing_secret"]


@pytest.mark.parametrize("field", ["url", "subscribed_events"])
async def test_patch_one_field_keeps_the_other(
    api: httpx.AsyncClient, auth: dict[str, str], field: str
) -> None:
    created = await create_config(api, auth)
    value: Any = "https://example.org/x" if field == "url" else ["survey_finished"]

    response = await api.patch(f"{CONFIGS}/{created['id']}", json={field: value}, headers=auth)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == VIEW_FIELDS
    expected = {**created, field: value}
    assert {key: body[key] for key in VIEW_FIELDS} == {key: expected[key] for key in VIEW_FIELDS}


async def test_patch_token_alone_includes_the_token(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth)
    token = "n3w-T0ken_" + "x" * 20

    response = await api.patch(
        f"{CONFIGS}/{created['id']}", json={"authorization_token": token}, headers=auth
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": created["id"],
        "url": created["url"],
        "subscribed_events": created["subscribed_events"],
        "enabled": True,
        "signature_scheme": "v1",
        "authorization_token": token,
        **DEFAULT_CONTROLS,
    }
    assert (await config_row(app.state.db, created["id"]))["authorization_token"] == token


async def test_patch_token_with_other_fields_includes_the_token(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth)
    token = "Another-token-0123456789"

    response = await api.patch(
        f"{CONFIGS}/{created['id']}",
        json={"authorization_token": token, "url": "https://example.net/hook"},
        headers=auth,
    )

    assert response.status_code == 200, response.text
    assert set(response.json()) == VIEW_FIELDS | {"authorization_token"}
    assert response.json()["authorization_token"] == token
    assert response.json()["url"] == "https://example.net/hook"


# --- read and delete ----------------------------------------------------------------


async def test_list_shows_own_configurations_without_tokens(
    api: httpx.AsyncClient, auth: dict[str, str], new_client: NewClient
) -> None:
    other = await new_client()
    other.pop("id")
    foreign = await create_config(api, other)
    mine = [
        await create_config(api, auth, url=f"https://example.com/{n}", subscribed_events=events)
        for n, events in enumerate([["survey_created"], ["survey_finished", "survey_created"]])
    ]

    response = await api.get(CONFIGS, headers=auth)

    assert response.status_code == 200
    listed = response.json()
    assert listed == [{key: config[key] for key in VIEW_FIELDS} for config in mine]
    assert foreign["id"] not in {item["id"] for item in listed}
    assert SEED_TOKEN not in response.text
    assert "signing_secret" not in response.text


async def test_list_of_a_new_client_is_empty(api: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await api.get(CONFIGS, headers=auth)
    assert response.status_code == 200
    assert response.json() == []


async def test_get_one_excludes_the_token(api: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await create_config(api, auth)

    response = await api.get(f"{CONFIGS}/{created['id']}", headers=auth)

    assert response.status_code == 200
    assert response.json() == {key: created[key] for key in VIEW_FIELDS}


async def test_get_unknown_id_is_404(api: httpx.AsyncClient, auth: dict[str, str]) -> None:
    assert_error(await api.get(f"{CONFIGS}/{uuid.uuid4()}", headers=auth), 404)


async def test_delete_returns_the_configuration_then_it_is_gone(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth)
    one = f"{CONFIGS}/{created['id']}"

    response = await api.delete(one, headers=auth)

    assert response.status_code == 200, response.text
    assert response.json() == {key: created[key] for key in VIEW_FIELDS}
    assert_error(await api.get(one, headers=auth), 404)
    assert_error(await api.delete(one, headers=auth), 404)
    assert_error(await api.patch(one, json={"url": PUBLIC_URL}, headers=auth), 404)
    assert_error(await api.get(f"{one}/secret", headers=auth), 404)
    assert_error(await api.post(f"{one}/secret/rotate", headers=auth), 404)
    assert created["id"] not in (await api.get(CONFIGS, headers=auth)).text


async def test_delete_cancels_pending_and_held_deliveries_only(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth)
    row = await config_row(app.state.db, created["id"])
    statuses = ["pending", "held", "delivered", "failed", "cancelled"]
    ids = {status: str(uuid.uuid4()) for status in statuses}
    for status, delivery_id in ids.items():
        await app.state.db.execute(
            deliveries.insert().values(
                id=delivery_id,
                config_id=created["id"],
                client_id=row["client_id"],
                event_id=str(uuid.uuid4()),
                event_type="survey_created",
                body="{}",
                status=status,
                created_at=utcnow(),
                next_attempt_at=utcnow() if status in ("pending", "held") else None,
            )
        )

    assert (await api.delete(f"{CONFIGS}/{created['id']}", headers=auth)).status_code == 200

    after = {
        r["id"]: (r["status"], r["next_attempt_at"])
        for r in await app.state.db.fetch_all(
            sa.select(deliveries).where(deliveries.c.config_id == created["id"])
        )
    }
    assert {status: after[ids[status]][0] for status in statuses} == {
        "pending": "cancelled",
        "held": "cancelled",
        "delivered": "delivered",
        "failed": "failed",
        "cancelled": "cancelled",
    }
    assert after[ids["pending"]][1] is None


# --- enabled (SPEC 9) ---------------------------------------------------------------


async def test_patch_enabled_false_disables_by_hand_and_true_enables_again(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth)
    one = f"{CONFIGS}/{created['id']}"

    disabled = await api.patch(one, json={"enabled": False}, headers=auth)

    assert disabled.status_code == 200, disabled.text
    assert (disabled.json()["enabled"], disabled.json()["disabled_reason"]) == (False, "manual")
    fetched = (await api.get(one, headers=auth)).json()
    assert (fetched["enabled"], fetched["disabled_reason"]) == (False, "manual")
    enabled = (await api.patch(one, json={"enabled": True}, headers=auth)).json()
    assert enabled["enabled"] is True and "disabled_reason" not in enabled


async def test_disabling_a_disabled_configuration_keeps_its_reason(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth)
    await app.state.db.execute(
        webhook_configs.update()
        .where(webhook_configs.c.id == created["id"])
        .values(enabled=False, disabled_reason="gone")
    )

    response = await api.patch(f"{CONFIGS}/{created['id']}", json={"enabled": False}, headers=auth)

    assert (response.json()["enabled"], response.json()["disabled_reason"]) == (False, "gone")


@pytest.mark.parametrize("value", ["false", 0, 1, "yes"])
async def test_enabled_must_be_a_json_boolean(
    api: httpx.AsyncClient, auth: dict[str, str], value: object
) -> None:
    created = await create_config(api, auth)

    response = await api.patch(f"{CONFIGS}/{created['id']}", json={"enabled": value}, headers=auth)

    assert error_fields(response) == ["enabled"]


# --- signing secret -----------------------------------------------------------------


async def test_get_secret(api: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await create_config(api, auth)

    response = await api.get(f"{CONFIGS}/{created['id']}/secret", headers=auth)

    assert response.status_code == 200
    assert response.json() == {"signing_secret": created["signing_secret"]}


async def test_rotate_secret_keeps_the_previous_one_for_24_hours(
    database_url: str, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth)
    one = f"{CONFIGS}/{created['id']}"

    before = utcnow()
    rotated = await api.post(f"{one}/secret/rotate", headers=auth)
    after = utcnow()

    assert rotated.status_code == 200, rotated.text
    assert set(rotated.json()) == {"signing_secret"}
    new_secret = rotated.json()["signing_secret"]
    _assert_signing_secret(new_secret)
    assert new_secret != created["signing_secret"]
    assert (await api.get(f"{one}/secret", headers=auth)).json() == {"signing_secret": new_secret}
    db = open_database(database_url)
    await db.connect()
    try:
        row = await config_row(db, created["id"])
    finally:
        await db.disconnect()
    assert row["signing_secret"] == new_secret
    assert row["previous_signing_secret"] == created["signing_secret"]
    expires = row["previous_secret_expires_at"]
    assert before + timedelta(hours=24) <= expires <= after + timedelta(hours=24)


async def test_rotating_twice_keeps_only_the_last_previous_secret(
    app: Starlette, api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_config(api, auth)
    rotate = f"{CONFIGS}/{created['id']}/secret/rotate"

    first = (await api.post(rotate, headers=auth)).json()["signing_secret"]
    second = (await api.post(rotate, headers=auth)).json()["signing_secret"]

    assert len({created["signing_secret"], first, second}) == 3
    row = await config_row(app.state.db, created["id"])
    assert (row["signing_secret"], row["previous_signing_secret"]) == (second, first)


# --- validation ---------------------------------------------------------------------

INVALID: list[tuple[str, str, Any]] = [
    ("url relative", "url", "/webhook_receiver"),
    ("url without scheme", "url", "mywebsite.com/webhook_receiver"),
    ("url ftp", "url", "ftp://example.com/file"),
    ("url file", "url", "file:///etc/passwd"),
    ("url javascript", "url", "javascript:alert(1)"),
    ("url without host", "url", "https:///path"),
    ("url too long", "url", PUBLIC_URL + "/" + "a" * (2049 - len(PUBLIC_URL) - 1)),
    ("url user info", "url", "https://user:pass@example.com/hook"),
    ("url user only", "url", "https://user@example.com/hook"),
    ("url not a string", "url", 42),
    ("token 15 chars", "authorization_token", "a" * 15),
    ("token 257 chars", "authorization_token", "a" * 257),
    ("token with a space", "authorization_token", "abcdefgh ijklmnop"),
    ("token with a tab", "authorization_token", "abcdefgh\tijklmnop"),
    ("token with a newline", "authorization_token", "abcdefghijklmnop\n"),
    ("token with a control char", "authorization_token", "abcdefgh\x01ijklmnop"),
    ("token with DEL", "authorization_token", "abcdefgh\x7fijklmnop"),
    ("token non-ASCII", "authorization_token", "abcdefgh\u00e9ijklmnop"),
    ("token not a string", "authorization_token", 12345678901234567),
    ("events empty", "subscribed_events", []),
    ("events unknown type", "subscribed_events", ["survey_deleted"]),
    ("events one unknown", "subscribed_events", ["survey_created", "nope"]),
    ("events not a list", "subscribed_events", "survey_created"),
    ("enabled as a number", "enabled", 1),
    ("unknown field", "colour", "blue"),
    ("id in body", "id", "12345678-1234-5678-1234-567812345678"),
    ("signing secret in body", "signing_secret", "whsec_" + "A" * 44),
]


@pytest.mark.parametrize(("case", "field", "value"), INVALID, ids=[case for case, *_ in INVALID])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_invalid_field_is_422_naming_the_field(
    app: Starlette,
    api: httpx.AsyncClient,
    auth: dict[str, str],
    method: str,
    case: str,
    field: str,
    value: Any,
) -> None:
    existing = await create_config(api, auth)
    before = await snapshot(app.state.db)
    if method == "POST":
        response = await api.post(CONFIGS, json=config_body(**{field: value}), headers=auth)
    else:
        response = await api.patch(f"{CONFIGS}/{existing['id']}", json={field: value}, headers=auth)

    fields = error_fields(response)
    assert any(name == field or name.startswith(f"{field}.") for name in fields), fields
    assert await snapshot(app.state.db) == before


@pytest.mark.parametrize("field", ["url", "subscribed_events"])
async def test_create_with_a_null_required_field_is_422(
    api: httpx.AsyncClient, auth: dict[str, str], field: str
) -> None:
    body = config_body(**{field: None})
    assert field in error_fields(await api.post(CONFIGS, json=body, headers=auth))


@pytest.mark.parametrize("field", ["url", "authorization_token", "subscribed_events", "enabled"])
async def test_patch_with_a_null_field_is_422_naming_it(
    api: httpx.AsyncClient, auth: dict[str, str], field: str
) -> None:
    created = await api.post(CONFIGS, json=config_body(), headers=auth)
    url = f"{CONFIGS}/{created.json()['id']}"
    body = {field: None, "authorization_token": "a-valid-token-of-24-chars"}
    if field == "authorization_token":
        body = {field: None}
    response = await api.patch(url, json=body, headers=auth)
    assert response.status_code == 422
    assert field in error_fields(response)
    assert (await api.get(url, headers=auth)).json() == {
        key: value
        for key, value in created.json().items()
        if key not in ("authorization_token", "signing_secret")
    }


@pytest.mark.parametrize("missing", ["url", "subscribed_events"])
async def test_create_without_a_required_field_is_422(
    api: httpx.AsyncClient, auth: dict[str, str], missing: str
) -> None:
    body = config_body()
    del body[missing]
    assert missing in error_fields(await api.post(CONFIGS, json=body, headers=auth))


async def test_every_invalid_field_is_reported(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    body = {"url": "ftp://x", "authorization_token": "short", "subscribed_events": [], "id": "x"}
    fields = error_fields(await api.post(CONFIGS, json=body, headers=auth))
    assert {"url", "authorization_token", "subscribed_events", "id"} <= set(fields)


# --- SSRF at registration -----------------------------------------------------------

REFUSED_TARGETS = [
    "http://127.0.0.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://localhost/",
    "http://foo.localhost/",
    "http://169.254.169.254/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://[fc00::1]/",
    "http://0.0.0.0/",
    "http://224.0.0.1/",
    # More spellings of the same places.
    "http://LOCALHOST./hook",
    "http://127.0.0.1.:8080/",
    "http://[0:0:0:0:0:ffff:7f00:1]/",
    "https://169.254.169.254/latest/meta-data/",
    "http://172.16.0.1/",
    "http://[fe80::1]/",
    "http://[::]/",
]
ACCEPTED_TARGETS = ["https://no-such-host.invalid/hook", "https://93.184.216.34/"]


@pytest.fixture
async def guarded(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """An API whose settings leave WEBHOOKS_ALLOW_PRIVATE_TARGETS off, and a client of it."""
    app = create_app(make_settings(database_url, WEBHOOKS_ALLOW_PRIVATE_TARGETS=False))
    async with app.router.lifespan_context(app):
        created = await create_client(app.state.db, "guarded")
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, headers


@pytest.mark.parametrize("url", REFUSED_TARGETS)
async def test_private_target_is_refused_at_registration(
    guarded: tuple[httpx.AsyncClient, dict[str, str]], url: str
) -> None:
    api, auth = guarded
    assert error_fields(await api.post(CONFIGS, json=config_body(url=url), headers=auth)) == ["url"]
    assert (await api.get(CONFIGS, headers=auth)).json() == []


@pytest.mark.parametrize("url", ACCEPTED_TARGETS)
async def test_unresolvable_or_public_target_is_accepted(
    guarded: tuple[httpx.AsyncClient, dict[str, str]], url: str
) -> None:
    api, auth = guarded
    response = await api.post(CONFIGS, json=config_body(url=url), headers=auth)
    assert response.status_code == 201, response.text
    assert response.json()["url"] == url


async def test_private_target_is_refused_on_patch(
    guarded: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    api, auth = guarded
    created = await create_config(api, auth, url=ACCEPTED_TARGETS[1])
    one = f"{CONFIGS}/{created['id']}"

    for url in REFUSED_TARGETS:
        response = await api.patch(one, json={"url": url}, headers=auth)
        assert error_fields(response) == ["url"], url

    assert (await api.get(one, headers=auth)).json()["url"] == ACCEPTED_TARGETS[1]
    accepted = await api.patch(one, json={"url": ACCEPTED_TARGETS[0]}, headers=auth)
    assert accepted.status_code == 200, accepted.text


async def test_private_targets_are_allowed_when_the_setting_is_on(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for url in ("http://127.0.0.1:8080/hook", "http://[::1]/", "http://localhost/"):
        assert (await create_config(api, auth, url=url))["url"] == url


async def test_unknown_id_answers_404_on_every_operation(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    one = f"{CONFIGS}/{uuid.uuid4()}"
    for response in (
        await api.get(one, headers=auth),
        await api.patch(one, json={"url": PUBLIC_URL}, headers=auth),
        await api.delete(one, headers=auth),
        await api.get(f"{one}/secret", headers=auth),
        await api.post(f"{one}/secret/rotate", headers=auth),
    ):
        assert_error(response, 404)


FAKE_DNS = {
    "intranet.example": ["10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "loopback6.example": ["::1"],
    "mixed.example": ["93.184.216.34", "127.0.0.1"],
    "public.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
}


@pytest.mark.parametrize(
    "host", ["intranet.example", "metadata.example", "loopback6.example", "mixed.example"]
)
async def test_a_name_that_resolves_to_a_private_address_is_refused(
    guarded: tuple[httpx.AsyncClient, dict[str, str]], fake_dns: dict[str, list[str]], host: str
) -> None:
    fake_dns.update(FAKE_DNS)
    api, auth = guarded
    url = f"https://{host}/hook"
    assert error_fields(await api.post(CONFIGS, json=config_body(url=url), headers=auth)) == ["url"]
    created = await create_config(api, auth, url="https://public.example/hook")
    response = await api.patch(f"{CONFIGS}/{created['id']}", json={"url": url}, headers=auth)
    assert error_fields(response) == ["url"]


# --- concurrent rotations ---------------------------------------------------------------


@pytest.fixture
def sqlite_started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every statement that the SQLite connections opened from now on start
    to run, in order: SQLite calls the trace callback as a statement starts, before it
    waits for any lock (PostgreSQL shows its waiters instead, see `_wait_for_waiters`)."""
    started: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(started.append)
        return connection

    monkeypatch.setattr(sqlite3, "connect", traced)
    return started


async def _wait_for_waiters(
    database_url: str, count: int, sqlite_started: list[str], *, since: int = 0
) -> None:
    """Until `count` rotations wait for the row's lock: on PostgreSQL, sessions that
    wait for a lock; on SQLite, rotations whose UPDATE has started (it then waits in
    SQLite's busy handler, which nothing shows)."""
    deadline = time.monotonic() + 5
    if not database_url.startswith("postgresql"):
        # The writer thread queues both rotations in one group commit and retries BEGIN
        # IMMEDIATE meanwhile: wait until it has tried, with both queued behind it.
        while not any(sql.startswith("BEGIN IMMEDIATE") for sql in sqlite_started[since:]):
            assert time.monotonic() < deadline, "the rotations never waited for the lock"
            await asyncio.sleep(0.01)
        return
    db = open_database(database_url)
    await db.connect()
    try:
        query = sa.text(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        while await db.fetch_val(query) < count:
            assert time.monotonic() < deadline, "the rotations never waited for the lock"
            await asyncio.sleep(0.01)
    finally:
        await db.disconnect()


def _is_rotation(sql: str) -> bool:
    return sql.startswith("UPDATE webhook_configs SET") and "previous_signing_secret" in sql


async def test_concurrent_rotations_lose_no_secret(
    database_url: str,
    sqlite_started: list[str],  # before `app`, so that its connections are traced
    app: Starlette,
    api: httpx.AsyncClient,
    auth: dict[str, str],
) -> None:
    """Two rotations that overlap must chain: the later one's previous secret is the
    earlier one's new secret, never the secret both of them first read."""
    created = await create_config(api, auth)
    rotate = f"{CONFIGS}/{created['id']}/secret/rotate"
    holder = open_database(database_url)
    await holder.connect()
    try:
        # Given the row is locked by another writer while both rotations start,
        async with holder.transaction():
            await holder.execute(
                webhook_configs.update()
                .where(webhook_configs.c.id == created["id"])
                .values(updated_at=utcnow())
            )
            before = len(sqlite_started)
            rotations = [asyncio.create_task(api.post(rotate, headers=auth)) for _ in range(2)]
            await _wait_for_waiters(database_url, 2, sqlite_started, since=before)
        # when the lock is released and both complete,
        answers = await asyncio.gather(*rotations)
    finally:
        await holder.disconnect()

    # then each returned secret is the current or the previous one: none was lost.
    returned = {answer.json()["signing_secret"] for answer in answers}
    assert len(returned) == 2
    row = await config_row(app.state.db, created["id"])
    assert {row["signing_secret"], row["previous_signing_secret"]} == returned
