"""Reading a request's JSON body: size, media type and syntax, before validation."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

MAX_BODY_BYTES = 1024 * 1024

Model = TypeVar("Model", bound=BaseModel)


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def read_body(request: Request) -> bytes:
    """The raw body, refused with 413 as soon as it passes 1 MiB (never read whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"body larger than {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or `BadRequest` with a message naming the position."""
    try:
        document = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        message = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BadRequest(f"body is not valid JSON: {message}") from None
    if not isinstance(document, dict):
        raise BadRequest("body must be a JSON object")
    return document


async def json_object(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type")
    if content_type is not None and not _is_json(content_type):
        raise UnsupportedMediaType("Content-Type must be application/json")
    raw = await read_body(request)
    if not raw.strip():
        raise BadRequest("body is empty; a JSON object is required")
    return parse_json_object(raw)


async def validated(request: Request, model: type[Model]) -> Model:
    """Read, parse and validate the body as `model`; every failure is an `ApiError`."""
    document = await json_object(request)
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise ValidationFailed.from_pydantic(exc) from None
    except RecursionError:
        raise BadRequest("body is not valid JSON: nested too deeply") from None
