"""The OpenAPI 3.1 document, generated from the routes' `Operation`s and pydantic models."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.convertors import Convertor
from starlette.routing import BaseRoute, Mount

from service.routing import ApiRoute, IdConvertor, Operation
from service.schemas import Error

_REF = "#/components/schemas/{model}"
_ERROR_TEXT = {
    400: "Body is not valid JSON or not an object",
    401: "Missing, malformed, unknown or revoked API key",
    404: "Unknown id, or another client's",
    409: "State conflict, or an Idempotency-Key used with another body (idempotency_conflict)",
    413: "Body larger than 1 MiB",
    415: "Body sent with a Content-Type other than JSON",
    422: "Invalid fields",
    503: "Not ready",
}


def _walk(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, ApiRoute]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from _walk(route.routes, prefix + route.path)
        elif isinstance(route, ApiRoute):
            yield prefix + route.path_format, route


def _models(routes: list[tuple[str, ApiRoute]]) -> list[type[BaseModel]]:
    found: dict[type[BaseModel], None] = {Error: None}
    for _, route in routes:
        op = route.operation
        for model in (op.request, *op.responses.values()):
            if model is not None:
                found[model] = None
    return list(found)


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=_REF)
    return [
        {"name": name, "in": "query", "required": False, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def _path_schema(convertor: Convertor[Any]) -> dict[str, Any]:
    if isinstance(convertor, IdConvertor):
        return {"type": "string", "format": "uuid"}
    return {"type": "string"}


IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key and body within 24 hours gets the first answer "
    "again and writes nothing; the same key with another body is a 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
}


def _parameters(route: ApiRoute) -> list[dict[str, Any]]:
    op = route.operation
    declared = op.path.model_json_schema()["properties"] if op.path is not None else {}
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": declared.get(name) or _path_schema(convertor),
        }
        for name, convertor in route.param_convertors.items()
    ]
    if op.query is not None:
        params += _query_parameters(op.query)
    if op.idempotent:
        params.append(IDEMPOTENCY_KEY_PARAMETER)
    return params


def _responses(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, model in op.responses.items():
        response: dict[str, Any] = {"description": op.summary}
        if model is not None:
            response["content"] = {"application/json": {"schema": refs[(model, "serialization")]}}
        elif op.text_response:
            response["content"] = {"text/plain": {"schema": {"type": "string"}}}
        responses[str(status)] = response
    errors = set(op.errors) | ({409} if op.idempotent else set())
    if op.auth:
        errors.add(401)
    if op.request is not None:
        errors |= {400, 413, 415, 422}
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {"application/json": {"schema": refs[(Error, "serialization")]}},
        }
    return responses


def _operation(path: str, route: ApiRoute, refs: dict[Any, Any]) -> dict[str, Any]:
    op = route.operation
    doc: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": f"{route.method}_{route.name}",
    }
    if params := _parameters(route):
        doc["parameters"] = params
    if op.request is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.request, "validation")]}},
        }
    doc["responses"] = _responses(op, refs)
    if op.auth:
        doc["security"] = [{"bearer": []}]
    return doc


def openapi_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    found = list(_walk(routes))
    models = _models(found)
    pairs = [(m, mode) for m in models for mode in ("validation", "serialization")]
    refs, definitions = models_json_schema(pairs, ref_template=_REF)  # type: ignore[arg-type]
    paths: dict[str, dict[str, Any]] = {}
    for path, route in found:
        paths.setdefault(path, {})[route.method] = _operation(path, route, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Webhook delivery service", "version": "2"},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
