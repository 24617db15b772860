"""Portal sessions (SPEC 12): the API's magic links, the login that turns one into a
session cookie once, and what refuses a link or a session."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from core.clients import revoke_client
from core.clock import utcnow
from core.database import Database
from core.tables import portal_sessions, service_keys
from service.app import create_app
from service.portal.links import Link, read_link, sign_link
from service.portal.sessions import COOKIE_NAME
from tests.conftest import NewClient, make_settings
from tests.service.portal.support import (
    SESSIONS,
    bearer,
    new_config,
    page,
    portal_link,
    sign_in,
)
from tests.service.support import assert_error, error_fields


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _token(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def _cookie_attributes(response: httpx.Response) -> dict[str, str]:
    header = response.headers["set-cookie"]
    attributes = {}
    for part in header.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value
    return attributes


# -- the API --------------------------------------------------------------------------


async def test_a_session_link_is_absolute_single_use_and_expires_in_an_hour(
    api: httpx.AsyncClient, client: dict[str, str]
) -> None:
    before = utcnow()

    response = await api.post(SESSIONS, json={}, headers=bearer(client))

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"url", "expires_at"}
    assert body["url"].startswith("http://test/portal/login?token=")
    assert body["expires_at"].endswith("Z")
    expires_at = _moment(body["expires_at"])
    assert timedelta(seconds=3598) < expires_at - before < timedelta(seconds=3601)


async def test_ttl_sets_the_expiry(api: httpx.AsyncClient, client: dict[str, str]) -> None:
    response = await api.post(SESSIONS, json={"ttl_s": 60}, headers=bearer(client))

    expires_at = _moment(response.json()["expires_at"])
    assert timedelta(seconds=58) < expires_at - utcnow() <= timedelta(seconds=60)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ttl_s": 59}, "ttl_s"),
        ({"ttl_s": 86401}, "ttl_s"),
        ({"ttl_s": "3600"}, "ttl_s"),
        ({"ttl_s": 3600.5}, "ttl_s"),
        ({"ttl_s": True}, "ttl_s"),
        ({"ttl_s": None}, "ttl_s"),
        ({"config_id": "not-a-uuid"}, "config_id"),
        ({"config_id": None}, "config_id"),
        ({"client_id": str(uuid.uuid4())}, "client_id"),
    ],
)
async def test_invalid_bodies_are_422_naming_the_field(
    api: httpx.AsyncClient, client: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = await api.post(SESSIONS, json=body, headers=bearer(client))

    assert error_fields(response) == [field]


async def test_a_session_for_another_clients_configuration_is_404(
    api: httpx.AsyncClient, client: dict[str, str], new_client: NewClient
) -> None:
    other = await new_client()
    theirs = await new_config(api, other)

    foreign = await api.post(SESSIONS, json={"config_id": theirs["id"]}, headers=bearer(client))
    unknown = await api.post(
        SESSIONS, json={"config_id": str(uuid.uuid4())}, headers=bearer(client)
    )

    assert_error(foreign, 404)
    assert foreign.json() == unknown.json()


async def test_sessions_need_the_api_key(api: httpx.AsyncClient) -> None:
    assert_error(await api.post(SESSIONS, json={}), 401)


async def test_the_link_is_built_from_the_public_url_when_set(
    database_url: str, new_client: NewClient
) -> None:
    settings = make_settings(database_url, WEBHOOKS_PUBLIC_URL="https://hooks.example.com/")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        created = await new_client()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://internal") as api:
            link = await portal_link(api, created)

    assert link.startswith("https://hooks.example.com/portal/login?token=")


# -- the login ------------------------------------------------------------------------


async def test_opening_the_link_sets_an_httponly_lax_cookie_and_redirects(
    browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    link = await portal_link(browser, client, ttl_s=600)

    response = await browser.get(link)

    assert response.status_code == 303
    assert response.headers["location"] == "/portal/"
    attributes = _cookie_attributes(response)
    assert response.headers["set-cookie"].startswith(f"{COOKIE_NAME}=")
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "lax"
    assert attributes["path"] == "/"
    assert 598 <= int(attributes["max-age"]) <= 600
    assert "secure" not in attributes  # plain http here
    assert response.headers["referrer-policy"] == "no-referrer"
    assert (await browser.get("/portal/")).status_code == 200


async def test_the_cookie_is_secure_behind_https(app: Starlette, client: dict[str, str]) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://test") as browser:
        link = await portal_link(browser, client)
        response = await browser.get(link)

    assert "secure" in _cookie_attributes(response)


async def test_the_cookie_is_not_the_token(
    browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    """The link may linger in a history or a log: what it held cannot open a session."""
    link = await sign_in(browser, client)

    assert browser.cookies[COOKIE_NAME] not in link
    assert _token(link).split(".")[0] not in browser.cookies[COOKIE_NAME]


async def test_a_used_link_is_a_401_page_without_a_cookie(
    browsers: Any, client: dict[str, str]
) -> None:
    first = await browsers()
    link = await sign_in(first, client)
    second = await browsers()

    response = await second.get(link)

    page(response, 401)
    assert "set-cookie" not in response.headers
    assert "used" in response.text
    assert (await second.get("/portal/")).status_code == 401


async def test_an_expired_link_is_refused(
    app: Starlette, browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    key = await _key(app, browser, client)
    past = int((utcnow() - timedelta(seconds=1)).timestamp())
    token = sign_link(key, Link(str(uuid.uuid4()), client["id"], None, past))

    response = await browser.get(f"/portal/login?token={token}")

    page(response, 401)
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    "forge",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        lambda token: "x" + token,
        lambda token: token.split(".")[0],
        lambda token: "",
        lambda token: "é.é",
        lambda token: token + "." + token,
        lambda token: "a" * 5000,
    ],
)
async def test_a_forged_or_malformed_token_is_refused(
    browser: httpx.AsyncClient, client: dict[str, str], forge: Any
) -> None:
    token = _token(await portal_link(browser, client))

    response = await browser.get("/portal/login", params={"token": forge(token)})

    page(response, 401)
    assert "set-cookie" not in response.headers


async def test_a_link_signed_with_another_key_is_refused(
    browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    link = Link(str(uuid.uuid4()), client["id"], None, int(utcnow().timestamp()) + 600)
    token = sign_link(b"another key of 32 bytes or more!!", link)

    page(await browser.get("/portal/login", params={"token": token}), 401)


async def test_the_key_is_made_once_and_kept_in_the_database(
    app: Starlette, db: Database, browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    link = await portal_link(browser, client)
    kept = await db.fetch_val(service_keys.select().with_only_columns(service_keys.c.value))

    read_link(str(kept).encode(), _token(link), now_s=utcnow().timestamp())


async def test_the_portal_secret_setting_signs_instead(
    database_url: str, new_client: NewClient
) -> None:
    secret = "s" * 40
    app = create_app(make_settings(database_url, WEBHOOKS_PORTAL_SECRET=secret))
    async with app.router.lifespan_context(app):
        created = await new_client()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            link = await portal_link(api, created)

    read_link(secret.encode(), _token(link), now_s=utcnow().timestamp())


# -- the session ----------------------------------------------------------------------


async def test_without_a_session_every_portal_page_is_401(browser: httpx.AsyncClient) -> None:
    for path in ("/portal/", "/portal/event-types", f"/portal/configs/{uuid.uuid4()}"):
        response = await browser.get(path)
        assert "Sign-in required" in page(response, 401).html


async def test_a_made_up_cookie_is_no_session(browser: httpx.AsyncClient) -> None:
    browser.cookies.set(COOKIE_NAME, "made-up")

    page(await browser.get("/portal/"), 401)


async def test_a_session_ends_when_it_expires(
    db: Database, browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    await sign_in(browser, client)
    await db.execute(portal_sessions.update().values(expires_at=utcnow() - timedelta(seconds=1)))

    page(await browser.get("/portal/"), 401)


async def test_a_revoked_client_loses_its_sessions(
    db: Database, browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    await sign_in(browser, client)

    await revoke_client(db, client["id"])

    page(await browser.get("/portal/"), 401)


async def test_signing_out_ends_the_session(
    browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    await sign_in(browser, client)
    cookie = browser.cookies[COOKIE_NAME]
    logout = page(await browser.get("/portal/")).form("/portal/logout")

    response = await browser.post("/portal/logout", data=logout.inputs)

    assert (response.status_code, response.headers["location"]) == (303, "/")
    browser.cookies.set(COOKIE_NAME, cookie)  # even if the browser kept it
    page(await browser.get("/portal/"), 401)


async def test_home_redirects_a_signed_in_browser_and_shows_a_page_otherwise(
    browsers: Any, client: dict[str, str]
) -> None:
    signed_in, anonymous = await browsers(), await browsers()
    await sign_in(signed_in, client)

    redirected = await signed_in.get("/")
    home = page(await anonymous.get("/"))

    assert (redirected.status_code, redirected.headers["location"]) == (303, "/portal/")
    assert "/api/v2/docs" in home.html


async def test_expired_sessions_are_removed_at_a_later_login(
    db: Database, browsers: Any, client: dict[str, str]
) -> None:
    await sign_in(await browsers(), client)
    await db.execute(portal_sessions.update().values(expires_at=datetime(2020, 1, 1, tzinfo=UTC)))

    await sign_in(await browsers(), client)

    rows = await db.fetch_all(
        portal_sessions.select().where(portal_sessions.c.client_id == client["id"])
    )
    assert len(rows) == 1


async def _key(app: Starlette, browser: httpx.AsyncClient, client: dict[str, str]) -> bytes:
    await portal_link(browser, client)  # makes the key
    key: bytes = app.state.portal_key
    return key
