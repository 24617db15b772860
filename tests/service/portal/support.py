"""Helpers of the portal's in-process tests: sessions, configurations, deliveries and
attempts, and a small HTML reader for what a page holds."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx

from core.clock import utcnow
from core.database import Database
from core.tables import attempts
from tests.outbox.helpers import new_delivery
from tests.service.support import create_config

SESSIONS = "/api/v2/portal/sessions"


def bearer(client: dict[str, str]) -> dict[str, str]:
    return {"Authorization": client["Authorization"]}


async def portal_link(api: httpx.AsyncClient, client: dict[str, str], **body: Any) -> str:
    response = await api.post(SESSIONS, json=body, headers=bearer(client))
    assert response.status_code == 201, response.text
    url: str = response.json()["url"]
    return url


async def sign_in(browser: httpx.AsyncClient, client: dict[str, str], **body: Any) -> str:
    """Open a new portal session of `client` in `browser`; returns the link it used."""
    link = await portal_link(browser, client, **body)
    response = await browser.get(link)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/portal/"
    return link


async def new_config(
    api: httpx.AsyncClient, client: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    created = await create_config(api, bearer(client), **overrides)
    return {**created, "client_id": client["id"]}


async def add_attempt(
    db: Database,
    delivery_id: str,
    number: int,
    *,
    status_code: int | None = 500,
    error: str | None = "http_status",
    response_body: str | None = "receiver says no",
    started_at: datetime | None = None,
) -> None:
    await db.execute(
        attempts.insert().values(
            delivery_id=delivery_id,
            number=number,
            started_at=started_at or utcnow() - timedelta(minutes=10 - number),
            duration_ms=40 + number,
            status_code=status_code,
            error=error,
            response_body=response_body,
        )
    )


async def failed_delivery(db: Database, config: dict[str, Any], *, attempts_made: int = 2) -> str:
    """A `failed` delivery with its attempts, each answered 500 `receiver says no`."""
    delivery_id = await new_delivery(
        db,
        config,
        status="failed",
        content={"survey": str(uuid.uuid4()), "answers": {"q1": "yes"}},
        attempt_count=attempts_made,
        last_attempt_at=utcnow(),
    )
    for number in range(1, attempts_made + 1):
        await add_attempt(db, delivery_id, number)
    return delivery_id


@dataclass
class Form:
    method: str
    action: str
    inputs: dict[str, str] = field(default_factory=dict)
    buttons: list[str] = field(default_factory=list)


@dataclass
class Page(HTMLParser):
    """What a page holds that the tests look at: its forms (fields and buttons), its
    scripts and stylesheets, inline script or style, every URL it loads, and its
    controls with or without a label."""

    html: str
    forms: list[Form] = field(default_factory=list)
    script_srcs: list[str] = field(default_factory=list)
    inline_scripts: int = 0
    style_attributes: int = 0
    style_elements: int = 0
    loaded: list[str] = field(default_factory=list)
    labels_for: set[str] = field(default_factory=set)
    controls: list[dict[str, str]] = field(default_factory=list)
    _button: list[str] | None = None
    _in_label: int = 0

    def __post_init__(self) -> None:
        super().__init__()
        self.feed(self.html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {name: value or "" for name, value in attrs}
        if "style" in a:
            self.style_attributes += 1
        if tag == "style":
            self.style_elements += 1
        if tag == "script":
            if a.get("src"):
                self.script_srcs.append(a["src"])
                self.loaded.append(a["src"])
            else:
                self.inline_scripts += 1
        if tag == "link" and a.get("href"):
            self.loaded.append(a["href"])
        if tag == "img" and a.get("src"):
            self.loaded.append(a["src"])
        if tag == "form":
            self.forms.append(Form(a.get("method", "get").lower(), a.get("action", "")))
        if tag == "label":
            self._in_label += 1
            if a.get("for"):
                self.labels_for.add(a["for"])
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append({**a, "_labelled": "1" if self._in_label else ""})
        if tag in ("input", "select", "textarea") and self.forms and a.get("name"):
            self.forms[-1].inputs[a["name"]] = a.get("value", "")
        if tag == "button":
            self._button = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._in_label -= 1
        if tag == "button" and self._button is not None:
            if self.forms:
                self.forms[-1].buttons.append("".join(self._button).strip())
            self._button = None

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button.append(data)

    def form(self, action_ends: str) -> Form:
        found = [form for form in self.forms if form.action.endswith(action_ends)]
        assert len(found) == 1, (action_ends, [form.action for form in self.forms])
        return found[0]

    def unlabelled(self) -> list[dict[str, str]]:
        return [
            control
            for control in self.controls
            if not control["_labelled"]
            and control.get("id") not in self.labels_for
            and not control.get("aria-label")
        ]


def page(response: httpx.Response, status: int = 200) -> Page:
    assert response.status_code == status, response.text[:3000]
    assert response.headers["content-type"].startswith("text/html"), response.headers
    return Page(response.text)


async def post_form(
    browser: httpx.AsyncClient, action: str, form: Form, /, **fields: str | list[str]
) -> httpx.Response:
    """Submit `form` as a browser would: its fields (the CSRF token among them) and
    `fields` over them."""
    data: dict[str, str | list[str]] = {**form.inputs, **fields}
    return await browser.post(action, data=data)
