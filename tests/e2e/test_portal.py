"""The portal in a real browser (SPEC 12): headless Chromium against real processes,
`webhooks serve` on SQLite and the Procfile's processes on PostgreSQL, with a real
receiver. A client's configurations and deliveries (delivered, failed, pending) are made
through the API and the pipeline; the tests then do in the browser what a person would.

Screenshots go to the test's folder, and to `WEBHOOKS_SCREENSHOTS_DIR` when it is set
(`WEBHOOKS_SCREENSHOTS_DIR=docs` refreshes the README's)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.clock import utcnow
from core.database import open_database
from core.settings import Settings
from service.portal import data
from service.portal.links import Link, sign_link
from tests.e2e.browser import Chromium, Console, chromium, screenshot
from tests.e2e.harness import Stack, procfile_stack, serve_stack
from tests.receivers import Receiver
from tests.servers import RedisServer, postgres_database, wait_for

pytestmark = pytest.mark.e2e

CONFIGS = "/api/v2/config/webhook"
SESSIONS = "/api/v2/portal/sessions"
MAX_ATTEMPTS = 4
# Retries close together, so that a failing delivery is `failed` within seconds; a
# maximum back-off that lets a `Retry-After: 600` keep a delivery pending meanwhile.
EXTRA_ENV = {
    "WEBHOOKS_MIN_BACKOFF_MS": "200",
    "WEBHOOKS_MAX_BACKOFF_MS": "600000",
    "WEBHOOKS_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
}
PROCFILE_PORTAL_SECRET = "a-portal-secret-shared-by-every-web-process-0123"
SETTLE_TIMEOUT_S = 30.0
WIDE = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


# -- the world: two clients' configurations and deliveries on a running stack ----------


@dataclass
class World:
    kind: str
    stack: Stack
    api: httpx.Client
    receiver: Receiver
    headers: dict[str, str]
    ok: dict[str, Any]
    failing: dict[str, Any]
    slow: dict[str, Any]
    failing_path: str
    other_config: dict[str, Any]
    other_delivery: str

    def link(self, **body: Any) -> str:
        response = self.api.post(SESSIONS, json=body, headers=self.headers)
        assert response.status_code == 201, response.text
        return str(response.json()["url"])

    def deliveries(self, config: dict[str, Any], **params: str) -> list[dict[str, Any]]:
        response = self.api.get(
            f"{CONFIGS}/{config['id']}/deliveries",
            params={"limit": "100", **params},
            headers=self.headers,
        )
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    def config(self, config_id: str) -> dict[str, Any]:
        response = self.api.get(f"{CONFIGS}/{config_id}", headers=self.headers)
        return dict(response.json())

    def new_config(
        self, path: str, events: list[str], *, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        response = self.api.post(
            CONFIGS,
            json={"url": self.receiver.url(path), "subscribed_events": events},
            headers=headers or self.headers,
        )
        assert response.status_code == 201, response.text
        return dict(response.json())


def _survey(api: httpx.Client, headers: dict[str, str], patient: str, *, complete: bool) -> None:
    created = api.post(
        "/api/v2/surveys", json={"patient_id": patient, "answers": {"q1": "yes"}}, headers=headers
    )
    assert created.status_code == 201, created.text
    if complete:
        done = api.patch(
            f"/api/v2/surveys/{created.json()['id']}", json={"status": "completed"}, headers=headers
        )
        assert done.status_code == 200, done.text


def _settle(world: World) -> None:
    def ready() -> bool:
        ok = world.deliveries(world.ok)
        failing = world.deliveries(world.failing)
        slow = world.deliveries(world.slow)
        return (
            len(ok) == 4
            and all(item["status"] == "delivered" for item in ok)
            and len(failing) == 3
            and all(item["status"] == "failed" for item in failing)
            and len(slow) == 1
            and slow[0]["attempt_count"] == 1
        )

    wait_for(ready, timeout_s=SETTLE_TIMEOUT_S, what="delivered, failed and pending deliveries")


def _world(kind: str, stack: Stack, receiver: Receiver) -> World:
    api = httpx.Client(base_url=stack.base_url, timeout=10)
    headers = stack.new_client("Acme Clinic")
    failing_path, slow_path = f"/status/{kind}-failing", f"/status/{kind}-slow"
    receiver.statuses[failing_path] = 500
    receiver.statuses[slow_path] = 503
    receiver.headers[slow_path] = {"Retry-After": "600"}
    world = World(kind, stack, api, receiver, headers, {}, {}, {}, failing_path, {}, "")
    world.ok = world.new_config(f"/ok/{kind}", ["survey_created", "survey_finished"])
    world.failing = world.new_config(failing_path, ["survey_created"])
    world.slow = world.new_config(slow_path, ["survey_finished"])
    for n in range(3):
        _survey(api, headers, f"patient-{n}", complete=n == 0)
    # Another client, whose configuration and delivery the first must never see
    other = stack.new_client("Another Clinic")
    world.other_config = world.new_config(f"/ok/{kind}-other", ["survey_created"], headers=other)
    _survey(api, other, "their-patient", complete=False)
    other_items = wait_for(
        lambda: api.get(f"{CONFIGS}/{world.other_config['id']}/deliveries", headers=other).json()[
            "items"
        ],
        timeout_s=SETTLE_TIMEOUT_S,
        what="the other client's delivery",
    )
    world.other_delivery = other_items[0]["id"]
    _settle(world)
    return world


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver().running() as running:
        yield running


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[World]:
    log_dir = tmp_path_factory.mktemp("portal-serve")
    with serve_stack(f"sqlite:///{log_dir / 'webhooks.db'}", log_dir, **EXTRA_ENV) as stack:
        world = _world("serve", stack, receiver)
        yield world
        world.api.close()
        assert "Traceback" not in stack.logs()


@pytest.fixture(scope="module")
def procfile_pg(
    tmp_path_factory: pytest.TempPathFactory, redis: RedisServer, receiver: Receiver
) -> Iterator[World]:
    log_dir = tmp_path_factory.mktemp("portal-procfile")
    env = {**EXTRA_ENV, "WEBHOOKS_PORTAL_SECRET": PROCFILE_PORTAL_SECRET}
    with postgres_database() as url, procfile_stack(url, redis.url, log_dir, **env) as stack:
        world = _world("procfile", stack, receiver)
        yield world
        world.api.close()
        assert "Traceback" not in stack.logs()


@pytest.fixture(params=["serve", "procfile_pg"])
def world(request: pytest.FixtureRequest) -> World:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[Chromium]:
    with chromium(tmp_path / "profiles") as opened:
        yield opened


@pytest.fixture
def browser(browsers: Chromium) -> Any:
    return browsers.open("main", viewport=WIDE)


def _open(browser: Any, world: World, **body: Any) -> tuple[Any, Console]:
    """A new tab signed in through a fresh portal link, on the list of configurations."""
    page = browser.new_page()
    console = Console(page)
    response = page.goto(world.link(**body))
    assert response is not None and response.status == 200
    assert page.url == world.stack.base_url + "/portal/"
    return page, console


def _reload_until(page: Any, predicate: Any, what: str) -> None:
    def check() -> bool:
        page.reload()
        return bool(predicate())

    wait_for(check, timeout_s=SETTLE_TIMEOUT_S, what=what)


# -- what a person does ---------------------------------------------------------------


def test_the_endpoints_with_their_health_the_filtered_list_and_a_failed_delivery(
    browser: Any, world: World, tmp_path: Path
) -> None:
    page, console = _open(browser, world)
    keep = world.kind == "serve"

    # The configurations are listed with their health
    rows = page.locator("tr[data-config-id]")
    assert rows.count() == 3
    failing_row = page.locator(f'tr[data-config-id="{world.failing["id"]}"]')
    assert world.failing["url"] in failing_row.inner_text()
    assert "Enabled" in failing_row.inner_text() and "3 failed" in failing_row.inner_text()
    assert "0 %" in failing_row.inner_text()
    ok_row = page.locator(f'tr[data-config-id="{world.ok["id"]}"]').inner_text()
    assert "100 %" in ok_row and "just now" in ok_row
    assert world.other_config["url"] not in page.content()
    if keep:
        screenshot(page, tmp_path, "portal-endpoints", full_page=False)

    # One configuration, its chart, then its deliveries filtered by status
    page.get_by_role("link", name=world.failing["url"]).click()
    assert page.locator("svg.chart-svg rect.bar-failed").count() >= 1
    if keep:
        screenshot(page, tmp_path, "portal-endpoint")
    page.get_by_role("link", name="All deliveries").click()
    page.get_by_label("Status", exact=True).select_option("failed")
    page.get_by_role("button", name="Filter").click()
    assert "status=failed" in page.url
    failed = page.locator("tr[data-delivery-id]")
    assert failed.count() == 3
    assert {failed.nth(n).get_attribute("data-status") for n in range(3)} == {"failed"}
    if keep:
        screenshot(page, tmp_path, "portal-deliveries", full_page=False)
    page.goto(f"{world.stack.base_url}/portal/configs/{world.slow['id']}/deliveries?status=pending")
    assert page.locator('tr[data-delivery-id][data-status="pending"]').count() == 1
    page.goto(f"{world.stack.base_url}/portal/configs/{world.slow['id']}/deliveries?status=failed")
    assert page.locator("tr[data-delivery-id]").count() == 0

    # A failed delivery: each attempt with the receiver's answer
    page.goto(f"{world.stack.base_url}/portal/configs/{world.failing['id']}/deliveries")
    page.locator('tr[data-status="failed"] a.row-link').first.click()
    attempts = page.locator("li.attempt")
    assert attempts.count() >= MAX_ATTEMPTS
    for n in range(attempts.count()):
        text = attempts.nth(n).inner_text()
        assert "HTTP 500" in text and "nope" in text and "http_status" in text
    assert page.get_by_role("button", name="Redeliver", exact=True).is_visible()
    assert '"patient_id"' in page.locator("section", has_text="Payload").inner_text()
    if keep:
        screenshot(page, tmp_path, "portal-delivery")
    assert console.errors == []


def test_redeliver_sends_it_again_and_the_page_shows_the_new_attempt(
    browser: Any, world: World
) -> None:
    page, console = _open(browser, world)
    target = world.deliveries(world.failing, status="failed")[0]
    before = len(world.receiver.at(world.failing_path))
    world.receiver.statuses[world.failing_path] = 200  # the receiver is fixed

    page.goto(f"{world.stack.base_url}/portal/deliveries/{target['id']}")
    shown = page.locator("li.attempt").count()
    page.get_by_role("button", name="Redeliver", exact=True).click()

    assert "being sent again" in page.locator("[role=status]").inner_text()
    wait_for(
        lambda: len(world.receiver.at(world.failing_path)) > before,
        timeout_s=SETTLE_TIMEOUT_S,
        what="the receiver to get the delivery again",
    )
    got = world.receiver.at(world.failing_path)[-1]
    assert got.webhook_id == target["id"]
    _reload_until(page, lambda: page.locator("li.attempt").count() == shown + 1, "one more attempt")
    newest = page.locator("li.attempt").first.inner_text()
    assert "HTTP 200" in newest and "ok" in newest
    assert "Delivered" in page.locator(".page-head .status").inner_text()
    assert console.errors == []


def test_editing_the_url_and_disabling_and_enabling(browser: Any, world: World) -> None:
    config = world.new_config(f"/ok/{world.kind}-edited-before", ["survey_created"])
    page, console = _open(browser, world)
    page.goto(f"{world.stack.base_url}/portal/configs/{config['id']}")
    new_url = world.receiver.url(f"/ok/{world.kind}-edited-after")

    page.get_by_label("Endpoint URL").fill(new_url)
    page.get_by_label("survey_finished").check()
    page.get_by_role("button", name="Save").click()

    assert "Endpoint saved." in page.locator("[role=status]").inner_text()
    assert page.get_by_label("Endpoint URL").input_value() == new_url
    stored = world.config(config["id"])
    assert stored["url"] == new_url
    assert stored["subscribed_events"] == ["survey_created", "survey_finished"]

    page.get_by_role("button", name="Disable endpoint").click()
    assert "Disabled: manual" in page.locator(".page-head").inner_text()
    stored = world.config(config["id"])
    assert (stored["enabled"], stored["disabled_reason"]) == (False, "manual")

    page.get_by_role("button", name="Enable endpoint").click()
    assert "Enabled" in page.locator(".page-head").inner_text()
    assert world.config(config["id"])["enabled"] is True

    page.get_by_label("Endpoint URL").fill("ftp://nope.example")
    page.get_by_role("button", name="Save").click()
    assert page.locator("#url-error").is_visible()
    assert world.config(config["id"])["url"] == new_url
    assert console.errors == []


def test_the_secret_is_shown_only_on_reveal(browser: Any, world: World) -> None:
    page, console = _open(browser, world)
    secret = world.api.get(f"{CONFIGS}/{world.ok['id']}/secret", headers=world.headers).json()[
        "signing_secret"
    ]
    page.goto(f"{world.stack.base_url}/portal/configs/{world.ok['id']}")
    assert secret not in page.content()

    page.get_by_role("button", name="Reveal secret").click()

    assert page.get_by_label("Current secret").input_value() == secret
    page.goto(f"{world.stack.base_url}/portal/configs/{world.ok['id']}")
    assert secret not in page.content()
    assert console.errors == []


def test_another_clients_configuration_and_delivery_are_not_found(
    browser: Any, world: World
) -> None:
    page, _ = _open(browser, world)
    base = world.stack.base_url

    for path in (
        f"/portal/configs/{world.other_config['id']}",
        f"/portal/configs/{world.other_config['id']}/deliveries",
        f"/portal/deliveries/{world.other_delivery}",
        f"/portal/configs/{uuid.uuid4()}",
    ):
        response = page.goto(base + path)
        assert response is not None and response.status == 404, path
        assert "Not found" in page.locator("h1").inner_text()
        assert world.other_config["url"] not in page.content()


def test_a_session_for_one_configuration_sees_only_it(browser: Any, world: World) -> None:
    page, _ = _open(browser, world, config_id=world.ok["id"])

    assert page.locator("tr[data-config-id]").count() == 1
    response = page.goto(f"{world.stack.base_url}/portal/configs/{world.failing['id']}")
    assert response is not None and response.status == 404


def _portal_key(world: World) -> bytes:
    settings = Settings(**world.stack.env)  # type: ignore[arg-type]

    async def read() -> bytes:
        db = open_database(settings.database_url)
        await db.connect()
        try:
            return await data.portal_key(db, settings)
        finally:
            await db.disconnect()

    # Playwright's sync API runs an event loop in this thread: read in another one.
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, read()).result()


def test_a_used_or_expired_link_is_refused(browser: Any, browsers: Chromium, world: World) -> None:
    link = world.link()
    first = browser.new_page()
    assert first.goto(link).status == 200  # type: ignore[union-attr]

    elsewhere = browsers.open("elsewhere")
    again = elsewhere.new_page()
    response = again.goto(link)
    assert response is not None and response.status == 401
    assert "cannot be used" in again.locator("h1").inner_text()
    assert elsewhere.cookies() == []

    client_id = _client_id(world)
    past = int(utcnow().timestamp()) - 1
    token = sign_link(_portal_key(world), Link(str(uuid.uuid4()), client_id, None, past))
    expired = again.goto(f"{world.stack.base_url}/portal/login?token={token}")
    assert expired is not None and expired.status == 401
    assert elsewhere.cookies() == []


def _client_id(world: World) -> str:
    """The client's id, read from a link it made (its claims are not secret)."""
    token = world.link().split("token=", 1)[1]
    claims = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["client_id"])


def test_a_post_without_the_csrf_token_is_refused(browser: Any, world: World) -> None:
    page, _ = _open(browser, world)
    page.goto(f"{world.stack.base_url}/portal/configs/{world.ok['id']}")
    pings = len(world.deliveries(world.ok, event_type="ping"))

    page.locator("form[action$='/ping'] input[name=csrf_token]").evaluate("field => field.remove()")
    with page.expect_response(re.compile(r"/ping$")) as answer:
        page.get_by_role("button", name="Send ping").click()

    assert answer.value.status == 403
    assert "Request refused" in page.locator("h1").inner_text()
    assert len(world.deliveries(world.ok, event_type="ping")) == pings


def test_home_the_event_catalogue_and_the_api_reference(
    browser: Any, world: World, tmp_path: Path
) -> None:
    page, console = _open(browser, world)
    keep = world.kind == "serve"

    page.goto(world.stack.base_url + "/")
    assert page.url == world.stack.base_url + "/portal/"  # signed in: to the portal
    page.get_by_role("link", name="Event types").click()
    assert page.locator("#type-survey_finished").is_visible()
    if keep:
        screenshot(page, tmp_path, "portal-event-types", full_page=False)

    page.get_by_role("link", name="API reference").click()
    page.locator(".opblock").first.wait_for()
    assert page.locator(".opblock").count() >= 19
    assert "OAS 3.1" in page.locator(".info").inner_text()
    assert "/api/v2/portal/sessions" in page.content()
    if keep:
        screenshot(page, tmp_path, "api-reference", full_page=False)
    assert console.errors == []


def test_the_pages_fit_a_phone_and_have_a_dark_theme(
    browsers: Chromium, serve: World, tmp_path: Path
) -> None:
    """The layout does not depend on the stack: on `webhooks serve` only."""
    world = serve
    phone = browsers.open("phone", viewport=PHONE, color_scheme="dark")
    page = phone.new_page()
    console = Console(page)
    page.goto(world.link())
    for path in (
        "/portal/",
        f"/portal/configs/{world.failing['id']}/deliveries",
        f"/portal/configs/{world.failing['id']}",
    ):
        page.goto(world.stack.base_url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
    screenshot(page, tmp_path, "portal-phone-dark", full_page=False)
    assert console.errors == []
