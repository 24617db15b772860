"""What each portal page shows (SPEC 12), in-process on both backends."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import httpx

from core.clock import utcnow
from core.database import Database
from core.events import catalogue
from service.portal.routes.docs import swagger_dir
from tests.conftest import NewClient
from tests.outbox.helpers import disable_config, new_delivery
from tests.service.portal.support import (
    add_attempt,
    bearer,
    failed_delivery,
    new_config,
    page,
    sign_in,
)
from tests.service.support import CONFIGS

ROW = re.compile(r'<tr data-delivery-id="([^"]+)" data-status="([^"]+)"')


def _rows(html: str) -> list[tuple[str, str]]:
    return ROW.findall(html)


async def test_the_list_shows_each_configuration_with_its_health(
    db: Database, browser: httpx.AsyncClient, client: dict[str, str], new_client: NewClient
) -> None:
    # Given two configurations of the client, one disabled by hand, and another client's
    busy = await new_config(browser, client, url="https://busy.example/hook")
    quiet = await new_config(browser, client, url="https://quiet.example/hook")
    theirs = await new_config(browser, await new_client(), url="https://theirs.example/hook")
    for status in ("delivered", "delivered", "delivered", "failed", "pending"):
        await new_delivery(db, busy, status=status)
    await new_delivery(db, busy, status="delivered", created_at=utcnow() - timedelta(days=2))
    await browser.patch(f"{CONFIGS}/{quiet['id']}", json={"enabled": False}, headers=bearer(client))

    # When the client's developer opens the portal
    await sign_in(browser, client)
    html = page(await browser.get("/portal/")).html

    # Then both configurations are listed with their health, and nothing of the other's
    assert re.findall(r'data-config-id="([^"]+)"', html) == [busy["id"], quiet["id"]]
    busy_row = html[html.index(f'data-config-id="{busy["id"]}"') : html.index(quiet["id"])]
    assert "https://busy.example/hook" in busy_row
    assert f'href="/portal/configs/{busy["id"]}"' in busy_row
    assert "Enabled" in busy_row and "survey_created" in busy_row
    assert re.search(r'class="num">\s*5\s*<span', busy_row), busy_row
    assert "1 failed" in busy_row and "1 pending" in busy_row
    assert "75.0 %" in busy_row
    assert "just now" in busy_row
    quiet_row = html[html.index(f'data-config-id="{quiet["id"]}"') :]
    assert "Disabled: manual" in quiet_row
    assert "—" in quiet_row  # no success rate without a final delivery
    assert theirs["id"] not in html and "theirs.example" not in html


async def test_a_configuration_page_has_its_chart_forms_and_recent_deliveries(
    db: Database, browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    config = await new_config(browser, client, subscribed_events=["survey_finished"])
    ids = [await new_delivery(db, config, status="delivered") for _ in range(12)]
    await new_delivery(db, config, status="failed", created_at=utcnow() - timedelta(hours=3))
    await sign_in(browser, client)

    html = page(await browser.get(f"/portal/configs/{config['id']}")).html

    assert config["url"] in html
    assert re.search(r'value="survey_finished" checked', html)
    assert not re.search(r'value="survey_created" checked', html)
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert svg.count('class="bar bar-delivered"') == 1
    assert svg.count('class="bar bar-failed"') == 1
    assert "12 delivered" in svg and "1 failed" in svg
    assert [row for row, _ in _rows(html)] == ids[::-1][:10]
    assert config["signing_secret"] not in html
    assert f"/portal/configs/{config['id']}/recover" in html
    assert f"/portal/configs/{config['id']}/deliveries" in html


async def test_the_delivery_list_filters_and_pages(
    db: Database, browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    config = await new_config(browser, client)
    base = utcnow() - timedelta(hours=2)
    delivered = [
        await new_delivery(db, config, status="delivered", created_at=base + timedelta(seconds=n))
        for n in range(55)
    ]
    failed = await new_delivery(db, config, status="failed", created_at=base + timedelta(minutes=5))
    ping = await new_delivery(db, config, event_type="ping", created_at=base + timedelta(minutes=6))
    await sign_in(browser, client)
    url = f"/portal/configs/{config['id']}/deliveries"

    first = page(await browser.get(url)).html
    assert len(_rows(first)) == 50
    older = re.search(r'href="(\?cursor=[^"]+)"', first)
    assert older is not None
    second = page(await browser.get(url + older.group(1).replace("&amp;", "&"))).html
    assert {row for row, _ in _rows(first) + _rows(second)} == {*delivered, failed, ping}

    only_failed = page(await browser.get(url, params={"status": "failed"})).html
    assert _rows(only_failed) == [(failed, "failed")]
    assert re.search(r'<option value="failed" selected>', only_failed)
    pings = page(await browser.get(url, params={"event_type": "ping", "status": ""})).html
    assert _rows(pings) == [(ping, "pending")]
    since = (base + timedelta(minutes=5)).isoformat()
    recent = page(await browser.get(url, params={"since": since})).html
    assert {row for row, _ in _rows(recent)} == {failed, ping}


async def test_filter_times_need_an_offset(
    browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    config = await new_config(browser, client)
    await sign_in(browser, client)
    url = f"/portal/configs/{config['id']}/deliveries"

    naive = page(await browser.get(url, params={"since": "2026-01-05T09:00:00"}), 422).html
    bad_cursor = page(await browser.get(url, params={"cursor": "nope"}), 422).html

    assert 'id="since-error"' in naive
    assert 'aria-invalid="true"' in naive
    assert "not valid" in bad_cursor


async def test_a_failed_delivery_shows_its_payload_headers_and_attempts(
    db: Database, browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    config = await new_config(browser, client)
    delivery_id = await failed_delivery(db, config, attempts_made=3)
    await sign_in(browser, client)

    shown = page(await browser.get(f"/portal/deliveries/{delivery_id}"))
    html = shown.html

    text = unescape(html)
    assert '{\n  "event_type": "survey_created",\n  "content": {' in text  # pretty JSON
    for header in ("content-type", "webhook-id", "webhook-timestamp", "webhook-signature"):
        assert f"<code>{header}</code>" in html
    assert delivery_id in html
    assert config["authorization_token"] not in html
    assert config["signing_secret"] not in html
    assert re.findall(r'data-attempt="(\d+)"', html) == ["3", "2", "1"]
    assert html.count("HTTP 500") == 3 and "receiver says no" in html and "http_status" in html
    redeliver = shown.form(f"/portal/deliveries/{delivery_id}/redeliver")
    assert (redeliver.method, redeliver.buttons) == ("post", ["Redeliver"])
    assert redeliver.inputs["csrf_token"]


async def test_a_long_payload_and_response_are_folded(
    db: Database, browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    config = await new_config(browser, client)
    answers = {f"q{n}": n for n in range(40)}
    delivery_id = await new_delivery(db, config, status="failed", content={"answers": answers})
    await add_attempt(db, delivery_id, 1, response_body="\n".join(f"line {n}" for n in range(60)))
    await sign_in(browser, client)

    html = page(await browser.get(f"/portal/deliveries/{delivery_id}")).html

    assert re.search(r"<details class=\"code\">\s*<summary>Payload \(\d+ lines\)", html)
    assert re.search(r'<details class="code response">\s*<summary>Response body', html)


async def test_a_held_delivery_has_no_redeliver_button(
    db: Database, browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    config = await new_config(browser, client)
    await disable_config(db, config["id"])
    delivery_id = await new_delivery(db, config, status="held")
    await sign_in(browser, client)

    html = page(await browser.get(f"/portal/deliveries/{delivery_id}")).html

    assert "Redeliver" not in html
    assert "enabling the endpoint sends it" in html


async def test_the_recover_page_offers_a_window_with_an_offset(
    browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    config = await new_config(browser, client)
    await sign_in(browser, client)

    shown = page(await browser.get(f"/portal/configs/{config['id']}/recover"))

    form = shown.form(f"/portal/configs/{config['id']}/recover")
    assert form.method == "post" and form.inputs["since"].endswith("Z")
    assert form.buttons == ["Send failed deliveries again"]


async def test_the_event_catalogue_has_each_schema_and_an_example(
    browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    await sign_in(browser, client)

    html = page(await browser.get("/portal/event-types")).html

    for entry in catalogue():
        assert f'id="type-{entry["name"]}"' in html
        assert entry["description"] in html
    assert '"patient_id": "patient-42"' in unescape(html)
    assert 'id="type-ping"' in html
    assert "JSON Schema" in html


async def test_the_api_reference_is_swagger_ui_5_served_here(browser: httpx.AsyncClient) -> None:
    shown = page(await browser.get("/api/v2/docs"))

    assert shown.inline_scripts == 0
    assert shown.script_srcs[0] == "/static/swagger-ui/swagger-ui-bundle.js"
    assert shown.script_srcs[1].startswith("/static/docs.js")
    assert 'data-openapi-url="/api/v2/openapi.json"' in shown.html
    for url in shown.loaded:
        response = await browser.get(url)
        assert response.status_code == 200, url
    bundle = (await browser.get("/static/swagger-ui/swagger-ui-bundle.js")).text
    version = re.search(r'PACKAGE_VERSION:"(\d+)\.(\d+)\.\d+"', bundle)
    assert version is not None and int(version.group(1)) >= 5  # renders OpenAPI 3.1
    # Only the files the page needs, not the rest of the package
    assert (swagger_dir() / "swagger-editor.js").exists()
    assert (await browser.get("/static/swagger-ui/swagger-editor.js")).status_code == 404


async def test_an_unknown_portal_page_is_a_404_page(
    browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    await sign_in(browser, client)

    page(await browser.get("/portal/nothing/here"), 404)


async def test_the_openapi_document_has_the_session_route(browser: httpx.AsyncClient) -> None:
    document = (await browser.get("/api/v2/openapi.json")).json()

    operation = document["paths"]["/api/v2/portal/sessions"]["post"]
    assert set(operation["responses"]) >= {"201", "401", "404", "422"}
    assert not [path for path in document["paths"] if path.startswith(("/portal", "/api/v2/docs"))]
    assert "/" not in document["paths"]
