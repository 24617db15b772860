"""The portal's security rules (SPEC 12): the CSP of every page, CSRF on every form and
action, and one client never seeing another's data: a foreign id is a 404 on every page
and action, walked from the app's routes so that a page added later is held to it."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from core.database import Database
from service.app import create_app
from service.portal.routes.docs import SwaggerAssets
from service.routing import ApiRoute, PageRoute
from tests.conftest import NewClient, make_settings
from tests.outbox.helpers import new_delivery
from tests.service.portal.support import (
    failed_delivery,
    new_config,
    page,
    sign_in,
)
from tests.service.support import Enqueued, snapshot


@dataclass
class Seen:
    """A signed-in browser of a client with one configuration and one failed delivery."""

    browser: httpx.AsyncClient
    config: dict[str, Any]
    delivery_id: str


async def _seen(db: Database, browser: httpx.AsyncClient, client: dict[str, str]) -> Seen:
    config = await new_config(browser, client)
    delivery_id = await failed_delivery(db, config)
    await sign_in(browser, client)
    return Seen(browser, config, delivery_id)


def _page_routes(app: Starlette) -> list[tuple[str, str]]:
    """(method, full path format) of every page of the portal, from the app."""
    found = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(route.routes, prefix + route.path)
            elif isinstance(route, PageRoute):
                found.extend(
                    (m, prefix + route.path_format) for m in route.methods or () if m != "HEAD"
                )

    walk(app.routes, "")
    return found


def _fill(
    path: str, seen: Seen, *, config_id: str | None = None, delivery_id: str | None = None
) -> str:
    return path.replace("{config_id}", config_id or seen.config["id"]).replace(
        "{delivery_id}", delivery_id or seen.delivery_id
    )


def _gets(app: Starlette, seen: Seen) -> list[str]:
    return [
        _fill(path, seen)
        for method, path in _page_routes(app)
        if method == "GET" and "{path}" not in path and path not in ("/", "/portal/login")
    ]


def _posts(app: Starlette) -> list[str]:
    return [path for method, path in _page_routes(app) if method == "POST"]


async def test_every_route_is_an_api_operation_a_page_or_static_files(app: Starlette) -> None:
    def walk(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, Mount) and route.routes:
                walk(route.routes)
            elif isinstance(route, Mount):
                assert isinstance(route.app, StaticFiles | SwaggerAssets), route.path
            else:
                assert isinstance(route, ApiRoute | PageRoute), route
                assert isinstance(route, Route)

    walk(app.routes)
    assert len(_posts(app)) >= 8


async def test_every_page_has_a_csp_without_inline_script_and_loads_nothing_from_elsewhere(
    app: Starlette, db: Database, browsers: Any, client: dict[str, str]
) -> None:
    seen = await _seen(db, await browsers(), client)
    anonymous = await browsers()
    paths = [*_gets(app, seen), "/portal/nothing", f"/portal/configs/{uuid.uuid4()}"]
    assert len(paths) >= 8

    for browser, path in [
        *((seen.browser, path) for path in paths),
        (anonymous, "/"),
        (anonymous, "/portal/login?token=x"),
        (anonymous, "/portal/"),
    ]:
        response = await browser.get(path)
        shown = page(response, response.status_code)
        policy = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["script-src"] == "'self'", path
        assert directives["style-src"] == "'self'", path
        assert directives["default-src"] == "'none'", path
        assert directives["frame-ancestors"] == "'self'", path
        assert "unsafe" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert shown.inline_scripts == 0, path
        assert (shown.style_attributes, shown.style_elements) == (0, 0), path
        assert all(url.startswith("/") and not url.startswith("//") for url in shown.loaded), path
        assert shown.unlabelled() == [], (path, shown.unlabelled())


async def test_frame_ancestors_come_from_the_setting(
    database_url: str, new_client: NewClient
) -> None:
    settings = make_settings(
        database_url, WEBHOOKS_PORTAL_FRAME_ANCESTORS="'self' https://app.example.com"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as browser:
            await sign_in(browser, await new_client())
            for path in ("/portal/", "/", "/api/v2/docs"):
                policy = (await browser.get(path)).headers["content-security-policy"]
                assert "frame-ancestors 'self' https://app.example.com" in policy


async def test_every_form_that_changes_something_posts_a_csrf_token_with_a_button(
    app: Starlette, db: Database, browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    seen = await _seen(db, browser, client)
    actions: set[str] = set()

    for path in _gets(app, seen):
        for form in page(await browser.get(path)).forms:
            if form.method != "post":
                continue
            actions.add(re.sub(r"[0-9a-f-]{36}", "{id}", form.action))
            assert form.inputs.get("csrf_token"), (path, form)
            assert form.buttons, (path, form)

    posts = {re.sub(r"\{\w+\}", "{id}", path) for path in _posts(app)}
    assert actions == posts  # every action has its form, and every form its route


@pytest.mark.parametrize("token", [None, "", "forged", "é"])
async def test_a_post_without_the_sessions_csrf_token_is_403_and_changes_nothing(
    app: Starlette,
    db: Database,
    browser: httpx.AsyncClient,
    client: dict[str, str],
    enqueued: Enqueued,
    token: str | None,
) -> None:
    seen = await _seen(db, browser, client)
    before = await snapshot(db)

    for path in _posts(app):
        data = {"url": "https://changed.example/", "enabled": "false"}
        if token is not None:
            data["csrf_token"] = token
        response = await browser.post(_fill(path, seen), data=data)
        assert "Request refused" in page(response, 403).html, path

    assert await snapshot(db) == before
    assert enqueued == []


async def test_another_sessions_csrf_token_is_refused(
    app: Starlette, db: Database, browsers: Any, client: dict[str, str]
) -> None:
    seen = await _seen(db, await browsers(), client)
    other = await browsers()
    await sign_in(other, client)
    their_token = page(await other.get("/portal/")).form("/portal/logout").inputs["csrf_token"]

    response = await seen.browser.post(
        f"/portal/configs/{seen.config['id']}/ping", data={"csrf_token": their_token}
    )

    page(response, 403)


async def test_a_json_post_is_refused_like_one_without_a_token(
    db: Database, browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    seen = await _seen(db, browser, client)
    token = page(await browser.get("/portal/")).form("/portal/logout").inputs["csrf_token"]

    response = await browser.post(
        f"/portal/configs/{seen.config['id']}/ping", json={"csrf_token": token}
    )

    page(response, 403)


async def test_another_clients_ids_are_404_on_every_page_and_action(
    app: Starlette,
    db: Database,
    browsers: Any,
    client: dict[str, str],
    new_client: NewClient,
    enqueued: Enqueued,
) -> None:
    # Given a signed-in client, and another client's configuration and delivery
    mine = await _seen(db, await browsers(), client)
    theirs = await _seen(db, await browsers(), await new_client())
    token = page(await mine.browser.get("/portal/")).form("/portal/logout").inputs["csrf_token"]
    before = await snapshot(db)

    # When the first client's session asks for the other's, or for ids that do not exist
    checked = 0
    for method, path in _page_routes(app):
        if "{config_id}" not in path and "{delivery_id}" not in path:
            continue
        answers = []
        for config_id, delivery_id in (
            (theirs.config["id"], theirs.delivery_id),
            (str(uuid.uuid4()), str(uuid.uuid4())),
        ):
            url = _fill(path, mine, config_id=config_id, delivery_id=delivery_id)
            data = {
                "csrf_token": token,
                "url": "https://x.example/",
                "since": "2020-01-01T00:00:00Z",
            }
            response = await mine.browser.request(
                method, url, data=data if method == "POST" else None
            )
            answers.append(response)
        foreign, unknown = answers

        # Then both are the same 404 page, and nothing of the other's shows or changes
        assert page(foreign, 404).html == page(unknown, 404).html, (method, path)
        assert theirs.config["url"] not in foreign.text
        checked += 1

    assert checked >= 10
    assert await snapshot(db) == before
    assert enqueued == []


async def test_a_session_for_one_configuration_sees_only_it(
    app: Starlette, db: Database, browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    one = await new_config(browser, client, url="https://one.example/hook")
    other = await new_config(browser, client, url="https://other.example/hook")
    other_delivery = await new_delivery(db, other)
    one_delivery = await new_delivery(db, one)
    await sign_in(browser, client, config_id=one["id"])

    listed = page(await browser.get("/portal/")).html

    assert re.findall(r'data-config-id="([^"]+)"', listed) == [one["id"]]
    assert "other.example" not in listed
    assert "This session shows one endpoint" in listed
    page(await browser.get(f"/portal/configs/{one['id']}"))
    page(await browser.get(f"/portal/deliveries/{one_delivery}"))
    page(await browser.get(f"/portal/configs/{other['id']}"), 404)
    page(await browser.get(f"/portal/configs/{other['id']}/deliveries"), 404)
    page(await browser.get(f"/portal/deliveries/{other_delivery}"), 404)
