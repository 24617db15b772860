"""SPEC 10: `/api/v2/openapi.json` is a valid OpenAPI 3.1 document of every route."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from starlette.applications import Starlette

from tests.service.support import CONFIGS, config_body, create_config, walk_routes

OPENAPI = "/api/v2/openapi.json"
UNAUTHENTICATED = {OPENAPI, "/healthz", "/readyz", "/metrics"}


@pytest.fixture
async def document(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get(OPENAPI)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    doc: dict[str, Any] = response.json()
    return doc


def _app_operations(app: Starlette) -> list[tuple[str, str]]:
    return sorted(
        (path, method.lower())
        for path, route in walk_routes(app.routes)
        for method in route.methods or ()
        if method != "HEAD"
    )


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> OAS31Validator:
    """A validator for `schema`, whose `$ref`s point into the document's components."""
    return OAS31Validator({**schema, "components": doc["components"]})


def _response_schema(doc: dict[str, Any], path: str, method: str, status: int) -> OAS31Validator:
    response = doc["paths"][path][method]["responses"][str(status)]
    return _validator(doc, response["content"]["application/json"]["schema"])


def _request_schema(doc: dict[str, Any], path: str, method: str) -> OAS31Validator:
    body = doc["paths"][path][method]["requestBody"]
    return _validator(doc, body["content"]["application/json"]["schema"])


async def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1")


async def test_document_lists_every_route_of_the_app(
    app: Starlette, document: dict[str, Any]
) -> None:
    operations = _app_operations(app)
    assert (CONFIGS, "post") in operations
    missing = [
        f"{method.upper()} {path}"
        for path, method in operations
        if method not in document["paths"].get(path, {})
    ]
    assert not missing, missing


async def test_document_lists_no_route_that_does_not_exist(
    app: Starlette, document: dict[str, Any]
) -> None:
    operations = set(_app_operations(app))
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented <= operations, documented - operations


async def test_every_operation_describes_its_responses(document: dict[str, Any]) -> None:
    """Each operation documents a success, every answer with content has a schema (JSON
    for the API and its errors, any media type for e.g. Prometheus text)."""
    undescribed = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            assert any(status.startswith("2") for status in responses), where
            for status, response in responses.items():
                if status == "204":
                    continue
                content = response.get("content", {})
                if not any("schema" in media for media in content.values()):
                    undescribed.append(f"{where} -> {status}")
                elif status.startswith(("4", "5")):
                    assert "schema" in content["application/json"], f"{where} -> {status}"
    assert not undescribed, undescribed


async def test_every_body_route_describes_its_request(document: dict[str, Any]) -> None:
    for path, method in ((CONFIGS, "post"), (CONFIGS + "/{config_id}", "patch")):
        body = document["paths"][path][method]["requestBody"]
        assert "schema" in body["content"]["application/json"], (method, path)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("put", "patch"):
                assert "requestBody" in operation, f"{method.upper()} {path}"


async def test_authentication_is_declared_where_it_is_required(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert any(s == {"type": "http", "scheme": "bearer"} for s in schemes.values())
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            if path in UNAUTHENTICATED:
                assert not operation.get("security"), where
            else:
                assert operation.get("security"), where
                assert "401" in operation["responses"], where


async def test_path_parameters_are_declared(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, f"{method.upper()} {path}"


async def test_responses_match_the_documented_schemas(
    api: httpx.AsyncClient, auth: dict[str, str], document: dict[str, Any]
) -> None:
    one = CONFIGS + "/{config_id}"
    created = await create_config(api, auth)
    url = f"{CONFIGS}/{created['id']}"
    _response_schema(document, CONFIGS, "post", 201).validate(created)
    checks = [
        (await api.get(CONFIGS, headers=auth), CONFIGS, "get", 200),
        (await api.get(url, headers=auth), one, "get", 200),
        (
            await api.patch(url, json={"authorization_token": "x" * 20}, headers=auth),
            one,
            "patch",
            200,
        ),
        (await api.get(f"{url}/secret", headers=auth), one + "/secret", "get", 200),
        (
            await api.post(f"{url}/secret/rotate", headers=auth),
            one + "/secret/rotate",
            "post",
            200,
        ),
        (await api.get("/api/v2/event-types", headers=auth), "/api/v2/event-types", "get", 200),
        (await api.post(CONFIGS, json={}, headers=auth), CONFIGS, "post", 422),
        (await api.post(CONFIGS, content=b"{", headers=auth), CONFIGS, "post", 400),
        (await api.get(CONFIGS), CONFIGS, "get", 401),
        (await api.delete(url, headers=auth), one, "delete", 200),
        (await api.get(url, headers=auth), one, "get", 404),
        (await api.get("/healthz"), "/healthz", "get", 200),
    ]
    for response, path, method, status in checks:
        assert response.status_code == status, (method, path, response.text)
        _response_schema(document, path, method, status).validate(response.json())


async def test_request_schemas_match_the_validation(document: dict[str, Any]) -> None:
    create = _request_schema(document, CONFIGS, "post")
    update = _request_schema(document, CONFIGS + "/{config_id}", "patch")
    create.validate(config_body())
    update.validate({"url": "https://example.com/"})
    assert not create.is_valid(config_body(id="x"))
    assert not create.is_valid({"url": "https://example.com/"})
    assert not create.is_valid(config_body(subscribed_events=["nope"]))
    assert not create.is_valid(config_body(authorization_token="short"))
    assert not update.is_valid({"colour": "blue"})


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": None},
        {"authorization_token": None},
        {"subscribed_events": None},
        {"enabled": None},
        {"enabled": 1},
        {"url": "https://user@example.com/hook"},
        {"url": "ftp://example.com/"},
        {"url": "https:///path"},
        {"url": "https://example.com/a b"},
    ],
    ids=repr,
)
async def test_the_patch_schema_refuses_what_the_route_refuses(
    api: httpx.AsyncClient, auth: dict[str, str], document: dict[str, Any], body: dict[str, Any]
) -> None:
    update = _request_schema(document, CONFIGS + "/{config_id}", "patch")
    created = await create_config(api, auth)

    response = await api.patch(f"{CONFIGS}/{created['id']}", json=body, headers=auth)

    assert response.status_code == 422, response.text
    assert not update.is_valid(body)


def _query_schema(doc: dict[str, Any], path: str, method: str, name: str) -> OAS31Validator:
    [parameter] = [p for p in doc["paths"][path][method]["parameters"] if p["name"] == name]
    return _validator(doc, parameter["schema"])


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2024-01-01T00:00:00Z", True),
        ("2024-01-01T00:00:00.5+00:00", True),
        ("2024-01-01T02:00:00+02:00", True),
        (0, False),
        (1700000000.5, False),
        ("1700000000", False),
        ("2024-01-01T00:00:00", False),
        ("2024-01-01", False),
        (None, False),
    ],
    ids=repr,
)
async def test_request_times_are_documented_as_strings_with_an_offset(
    document: dict[str, Any], value: Any, valid: bool
) -> None:
    recover = _request_schema(document, CONFIGS + "/{config_id}/recover", "post")
    deliveries = CONFIGS + "/{config_id}/deliveries"
    assert recover.is_valid({"since": value}) is valid
    assert recover.is_valid({"since": "2024-01-01T00:00:00Z", "until": value}) is (
        valid or value is None
    )
    for name in ("since", "until"):
        assert _query_schema(document, deliveries, "get", name).is_valid(value) is valid


def _date_times(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema in `node` that is a `date-time` string."""
    if isinstance(node, dict):
        if node.get("format") == "date-time":
            yield node
        for child in node.values():
            yield from _date_times(child)
    elif isinstance(node, list):
        for child in node:
            yield from _date_times(child)


async def test_every_documented_time_requires_an_offset(document: dict[str, Any]) -> None:
    schemas = list(_date_times(document))
    assert len(schemas) > 10
    for schema in schemas:
        assert re.search(schema["pattern"], "2024-01-01T00:00:00Z"), schema
        assert not re.search(schema["pattern"], "2024-01-01T00:00:00"), schema
