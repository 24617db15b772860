"""Helpers shared by the API tests: request bodies, the SPEC 4 error shape, DB snapshots."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from core.database import Database, record_dict
from core.tables import metadata, webhook_configs
from service.routing import PageRoute

CONFIGS = "/api/v2/config/webhook"
PUBLIC_URL = "https://example.com/webhook_receiver"
SEED_TOKEN = "zGORr7q1I4egIr0c0eKXD7CMpIcjFooJ"


def config_body(**overrides: Any) -> dict[str, Any]:
    """A valid creation body; `overrides` replace or add fields."""
    body: dict[str, Any] = {
        "url": PUBLIC_URL,
        "authorization_token": SEED_TOKEN,
        "subscribed_events": ["survey_created"],
    }
    body.update(overrides)
    return body


async def create_config(
    api: httpx.AsyncClient, auth: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    response = await api.post(CONFIGS, json=config_body(**overrides), headers=auth)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """`response` is a SPEC 4 error of `status`; returns its `error` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert {"code", "message"} <= set(error) <= {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    if "details" in error:
        assert isinstance(error["details"], list) and error["details"], error
        for detail in error["details"]:
            assert set(detail) == {"field", "message"}, detail
            assert all(isinstance(value, str) for value in detail.values()), detail
    assert "Traceback" not in response.text
    return error


def error_fields(response: httpx.Response) -> list[str]:
    """The `details[].field` of a 422."""
    error = assert_error(response, 422)
    return [detail["field"] for detail in error.get("details", [])]


async def snapshot(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of the service (clients, configurations, surveys, the
    outbox, deliveries, attempts: all of `core.tables`), each table in primary-key order:
    two snapshots differ if any row was inserted, changed or deleted in between.

    All tables, not those a route is meant to write: a refused request that wrote
    anywhere (a survey before its validation, an event for a refused completion) must
    show."""
    return {
        table.name: [
            record_dict(row)
            for row in await db.fetch_all(sa.select(table).order_by(*table.primary_key.columns))
        ]
        for table in metadata.sorted_tables
    }


async def config_row(db: Database, config_id: str) -> dict[str, Any]:
    row = await db.fetch_one(sa.select(webhook_configs).where(webhook_configs.c.id == config_id))
    assert row is not None, config_id
    return record_dict(row)


def walk_routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, Route]]:
    """Every endpoint route of an app's HTTP API as (full path format, route), mounts
    flattened; the browser's pages (`PageRoute`: the portal, the API reference) are not
    operations of the API."""
    for route in routes:
        if isinstance(route, Mount):
            yield from walk_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route) and not isinstance(route, PageRoute):
            yield prefix + route.path_format, route


def api_operations(app: Starlette) -> list[tuple[str, str]]:
    """(method, path format) of every route under /api/v2 except the OpenAPI document."""
    return sorted(
        (method, path)
        for path, route in walk_routes(app.routes)
        if path.startswith("/api/v2/") and path != "/api/v2/openapi.json"
        for method in route.methods or ()
        if method != "HEAD"
    )


def fill_path(path: str, value: str) -> str:
    """`path` with every `{parameter}` replaced by `value`."""
    return re.sub(r"\{[^}]+\}", value, path)


class Enqueued(list[str]):
    """The app's `enqueue`: records the delivery ids the API makes due."""

    async def __call__(self, delivery_ids: list[str]) -> None:
        self.extend(delivery_ids)
