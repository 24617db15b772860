"""The portal's forms act through the API's rules (SPEC 12): edit, enable and disable,
reveal and rotate the secret, ping, redeliver and recover."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
import pytest

from core.clock import utcnow
from core.database import Database
from core.tables import deliveries
from service.app import create_app
from tests.conftest import NewClient, make_settings
from tests.outbox.helpers import delivery, disable_config, new_delivery
from tests.service.portal.support import (
    bearer,
    failed_delivery,
    new_config,
    page,
    post_form,
    sign_in,
)
from tests.service.support import CONFIGS, Enqueued, config_row


@pytest.fixture
async def config(browser: httpx.AsyncClient, client: dict[str, str]) -> dict[str, Any]:
    created = await new_config(browser, client, subscribed_events=["survey_created"])
    await sign_in(browser, client)
    return created


async def _api_view(
    browser: httpx.AsyncClient, client: dict[str, str], config: dict[str, Any]
) -> dict[str, Any]:
    response = await browser.get(f"{CONFIGS}/{config['id']}", headers=bearer(client))
    view: dict[str, Any] = response.json()
    return view


async def _form(browser: httpx.AsyncClient, path: str, action: str) -> Any:
    return page(await browser.get(path)).form(action)


async def test_editing_url_events_and_token(
    db: Database, browser: httpx.AsyncClient, client: dict[str, str], config: dict[str, Any]
) -> None:
    url = f"/portal/configs/{config['id']}"
    form = await _form(browser, url, url)

    response = await post_form(
        browser,
        url,
        form,
        url="https://new.example/hook",
        subscribed_events=["survey_created", "survey_finished"],
        authorization_token="a-new-token-0123456789",
    )

    assert (response.status_code, response.headers["location"]) == (303, url + "?notice=saved")
    view = await _api_view(browser, client, config)
    assert view["url"] == "https://new.example/hook"
    assert view["subscribed_events"] == ["survey_created", "survey_finished"]
    assert (await config_row(db, config["id"]))["authorization_token"] == "a-new-token-0123456789"
    assert "Endpoint saved." in page(await browser.get(response.headers["location"])).html


async def test_an_empty_token_field_keeps_the_token(
    db: Database, browser: httpx.AsyncClient, config: dict[str, Any]
) -> None:
    url = f"/portal/configs/{config['id']}"
    form = await _form(browser, url, url)

    await post_form(browser, url, form, subscribed_events=["survey_created"])

    assert (await config_row(db, config["id"]))["authorization_token"] == config[
        "authorization_token"
    ]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": "ftp://example.com/"}, "url"),
        ({"url": "https://user@example.com/"}, "url"),
        ({"url": ""}, "url"),
        ({"subscribed_events": []}, "subscribed_events"),
        ({"subscribed_events": ["nope"]}, "subscribed_events"),
        ({"authorization_token": "short"}, "authorization_token"),
    ],
)
async def test_an_invalid_edit_is_a_422_page_naming_the_field_and_changes_nothing(
    db: Database,
    browser: httpx.AsyncClient,
    config: dict[str, Any],
    fields: dict[str, Any],
    field: str,
) -> None:
    url = f"/portal/configs/{config['id']}"
    form = await _form(browser, url, url)
    before = await config_row(db, config["id"])
    values = {"subscribed_events": ["survey_created"], **fields}

    shown = page(await post_form(browser, url, form, **values), 422)

    # The API's own message for the field (its wording is the schema's, not the page's)
    error = re.search(rf'<p class="field-error" id="{field}-error">([^<]+)</p>', shown.html)
    assert error is not None and error.group(1).strip(), shown.html
    assert f'aria-describedby="{field}-error"' in shown.html
    assert await config_row(db, config["id"]) == before


async def test_a_private_target_is_refused_as_the_api_refuses_it(
    database_url: str, new_client: NewClient
) -> None:
    app = create_app(make_settings(database_url, WEBHOOKS_ALLOW_PRIVATE_TARGETS=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as browser:
            client = await new_client()
            config = await new_config(browser, client)
            await sign_in(browser, client)
            url = f"/portal/configs/{config['id']}"
            form = await _form(browser, url, url)

            response = await post_form(
                browser,
                url,
                form,
                url="http://127.0.0.1/hook",
                subscribed_events=["survey_created"],
            )

    assert "private or reserved address" in page(response, 422).html


async def test_disabling_and_enabling(
    db: Database,
    browser: httpx.AsyncClient,
    client: dict[str, str],
    config: dict[str, Any],
    enqueued: Enqueued,
) -> None:
    url = f"/portal/configs/{config['id']}"
    action = url + "/enabled"

    disabled = await post_form(browser, action, await _form(browser, url, action))
    assert disabled.headers["location"] == url + "?notice=disabled"
    view = await _api_view(browser, client, config)
    assert (view["enabled"], view["disabled_reason"]) == (False, "manual")
    held = await new_delivery(db, {**config, "client_id": client["id"]}, status="held")
    shown = page(await browser.get(url)).html
    assert "Disabled: manual" in shown and "Enable endpoint" in shown

    enabled = await post_form(browser, action, await _form(browser, url, action))
    assert enabled.headers["location"] == url + "?notice=enabled"
    assert (await _api_view(browser, client, config))["enabled"] is True
    assert (await delivery(db, held))["status"] == "pending"
    assert enqueued == [held]


async def test_the_secret_is_shown_only_on_reveal(
    browser: httpx.AsyncClient, config: dict[str, Any]
) -> None:
    url = f"/portal/configs/{config['id']}"
    action = url + "/secret/reveal"
    assert config["signing_secret"] not in (await browser.get(url)).text

    revealed = page(await post_form(browser, action, await _form(browser, url, action)))

    assert f'value="{config["signing_secret"]}"' in revealed.html
    assert config["signing_secret"] not in (await browser.get(url)).text


async def test_a_v1a_configuration_reveals_its_public_key_only(
    db: Database, browser: httpx.AsyncClient, client: dict[str, str]
) -> None:
    config = await new_config(
        browser, client, subscribed_events=["survey_created"], signature_scheme="v1a"
    )
    await sign_in(browser, client)
    url = f"/portal/configs/{config['id']}"
    action = url + "/secret/reveal"
    private = (await config_row(db, config["id"]))["signing_secret"]

    revealed = page(await post_form(browser, action, await _form(browser, url, action)))

    assert f'value="{config["signing_public_key"]}"' in revealed.html
    assert "Current public key" in revealed.html
    assert private.removeprefix("whsk_") not in revealed.html
    assert config["signing_public_key"] not in (await browser.get(url)).text


async def test_rotating_the_secret_keeps_the_previous_one_signing(
    db: Database, browser: httpx.AsyncClient, config: dict[str, Any]
) -> None:
    url = f"/portal/configs/{config['id']}"
    action = url + "/secret/rotate"

    response = await post_form(browser, action, await _form(browser, url, action))

    assert response.headers["location"] == url + "?notice=rotated"
    row = await config_row(db, config["id"])
    assert row["signing_secret"] != config["signing_secret"]
    assert row["previous_signing_secret"] == config["signing_secret"]
    assert row["signing_secret"] not in (await browser.get(response.headers["location"])).text


async def test_a_ping_is_a_delivery_whose_page_opens(
    db: Database, browser: httpx.AsyncClient, config: dict[str, Any], enqueued: Enqueued
) -> None:
    url = f"/portal/configs/{config['id']}"
    action = url + "/ping"

    response = await post_form(browser, action, await _form(browser, url, action))

    assert response.status_code == 303
    assert (
        enqueued and response.headers["location"] == f"/portal/deliveries/{enqueued[0]}?notice=ping"
    )
    assert (await delivery(db, enqueued[0]))["event_type"] == "ping"
    shown = page(await browser.get(response.headers["location"])).html
    assert "Ping queued" in shown and "<code>ping</code> delivery" in shown


async def test_redeliver_sends_a_failed_delivery_again(
    db: Database,
    browser: httpx.AsyncClient,
    client: dict[str, str],
    config: dict[str, Any],
    enqueued: Enqueued,
) -> None:
    delivery_id = await failed_delivery(db, {**config, "client_id": client["id"]})
    url = f"/portal/deliveries/{delivery_id}"
    action = url + "/redeliver"

    response = await post_form(browser, action, await _form(browser, url, action))

    assert response.headers["location"] == url + "?notice=redelivered"
    assert (await delivery(db, delivery_id))["status"] == "pending"
    assert enqueued == [delivery_id]


async def test_redelivering_a_delivery_held_meanwhile_is_a_409_page(
    db: Database,
    browser: httpx.AsyncClient,
    client: dict[str, str],
    config: dict[str, Any],
    enqueued: Enqueued,
) -> None:
    delivery_id = await failed_delivery(db, {**config, "client_id": client["id"]})
    url = f"/portal/deliveries/{delivery_id}"
    form = await _form(browser, url, url + "/redeliver")
    await disable_config(db, config["id"])
    await db.execute(
        deliveries.update().where(deliveries.c.id == delivery_id).values(status="held")
    )

    shown = page(await post_form(browser, url + "/redeliver", form), 409)

    assert "The delivery is held" in shown.html
    assert enqueued == []


async def test_recover_sends_the_failed_deliveries_of_a_window_again(
    db: Database,
    browser: httpx.AsyncClient,
    client: dict[str, str],
    config: dict[str, Any],
    enqueued: Enqueued,
) -> None:
    owned = {**config, "client_id": client["id"]}
    recent = [await failed_delivery(db, owned) for _ in range(2)]
    await new_delivery(db, owned, status="failed", created_at=utcnow() - timedelta(days=3))
    url = f"/portal/configs/{config['id']}/recover"

    response = await post_form(browser, url, await _form(browser, url, url))

    assert response.headers["location"] == url + "?recovered=2"
    assert sorted(enqueued) == sorted(recent)
    shown = page(await browser.get(response.headers["location"])).html
    assert "2 failed deliveries are being sent again." in shown


async def test_recover_needs_times_with_an_offset(
    browser: httpx.AsyncClient, config: dict[str, Any], enqueued: Enqueued
) -> None:
    url = f"/portal/configs/{config['id']}/recover"
    form = await _form(browser, url, url)

    shown = page(await post_form(browser, url, form, since="2026-01-05T09:00:00"), 422)

    assert 'id="since-error"' in shown.html
    assert 'value="2026-01-05T09:00:00"' in shown.html
    assert enqueued == []
