"""Errors as SPEC 4 defines them: `{"error": {"code", "message", "details"?}}`.

ApiError                      the root: any error that becomes an HTTP response
 +-- BadRequest               400, body is not valid JSON or not an object
 +-- Unauthorized             401, with `WWW-Authenticate: Bearer`
 +-- NotFound                 404
 +-- Conflict                 409
 |    +-- IdempotencyConflict  409 `idempotency_conflict` (defined in service.idempotency)
 +-- PayloadTooLarge          413
 +-- UnsupportedMediaType     415
 +-- ValidationFailed         422, one `details` entry per field

A database or broker that is away (`core.outages`) is a 503 `unavailable` with
`Retry-After`, whatever the route; any other unexpected error is a 500 `internal_error`
whose text never reaches the client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import Scope

from core.outages import OUTAGE_TYPES, is_outage

logger = logging.getLogger("webhooks.service")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers


class BadRequest(ApiError):
    status_code, code = 400, "bad_request"


class Unauthorized(ApiError):
    status_code, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotFound(ApiError):
    status_code, code = 404, "not_found"


class Conflict(ApiError):
    status_code, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status_code, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status_code, code = 415, "unsupported_media_type"


class ValidationFailed(ApiError):
    status_code, code = 422, "validation_error"

    @classmethod
    def from_pydantic(cls, exc: ValidationError) -> ValidationFailed:
        details = [
            {
                "field": ".".join(str(part) for part in err["loc"]) or "body",
                "message": err["msg"],
            }
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        return cls("request validation failed", details=details)


def error_document(
    code: str, message: str, *, details: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """The body of an error: `{"error": {"code", "message", "details"?}}`."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    document = error_document(code, message, details=details)
    return JSONResponse(document, status_code=status_code, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status_code, exc.code, exc.message, details=exc.details, headers=exc.headers
    )


def _allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> set[str]:
    """Every method some route accepts at this path (Starlette's own `Allow` names only
    the first route that matched the path, and ours are one route per method)."""
    allowed: set[str] = set()
    for route in routes:
        match, child_scope = route.matches(scope)
        if match == Match.NONE:
            continue
        if isinstance(route, Mount):
            allowed |= _allowed_methods(route.routes, {**scope, **child_scope})
        elif isinstance(route, Route) and route.methods:
            allowed |= route.methods
    return allowed


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _CODES.get(exc.status_code, "error")
    message = {404: "no such resource", 405: "method not allowed"}.get(
        exc.status_code, str(exc.detail)
    )
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        # The router has rewritten the request's scope for the mount: match afresh.
        scope = {"type": "http", "path": request.url.path, "root_path": "", "method": "GET"}
        allowed = _allowed_methods(request.app.routes, scope)
        headers["Allow"] = ", ".join(sorted(allowed))
    return error_response(exc.status_code, code, message, headers=headers or None)


# What a client is told to wait before trying again while a dependency is away.
RETRY_AFTER_S = 2


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The exception is logged with its type only: its text may carry request data.
    logger.error("unhandled error: %s", type(exc).__name__)
    return error_response(500, "internal_error", "internal error")


async def _outage_or_unexpected(request: Request, exc: Exception) -> Response:
    if not is_outage(exc):
        return await _unexpected(request, exc)
    logger.warning("dependency unavailable: %s", type(exc).__name__)
    return error_response(
        503,
        "unavailable",
        "a service this API depends on is unavailable; try again shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_exception,
    # Handled where they are raised (not by the server-error middleware, which would
    # log them again with their traceback).
    **dict.fromkeys(OUTAGE_TYPES, _outage_or_unexpected),
    Exception: _unexpected,
}
