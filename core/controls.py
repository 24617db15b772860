"""Delivery controls of a configuration (SPEC 13): the rules of each field, and what
the fan-out does with `filter` and `payload`.

The limits (`rate_limit_per_s`, `max_in_flight`) are the workers' (`workers.limits`);
`ordering` is a rule of the claim (`core.lifecycle.attempts`).
"""

from __future__ import annotations

import json
import logging
import re
from enum import StrEnum
from functools import lru_cache
from typing import Any

import jmespath
from jmespath import exceptions as jmespath_errors
from jmespath.parser import ParsedResult

from core.events import SURVEY_EVENTS, event_body

logger = logging.getLogger("webhooks.fanout")


class Ordering(StrEnum):
    NONE = "none"
    FIFO = "fifo"


class Payload(StrEnum):
    FULL = "full"
    THIN = "thin"


class WaitingReason(StrEnum):
    """Why a pending delivery waits unattempted (the delivery's `waiting_reason`)."""

    RATE_LIMITED = "rate_limited"
    MAX_IN_FLIGHT = "max_in_flight"
    ORDERING = "ordering"


MAX_RATE_LIMIT_PER_S = 10_000
MAX_IN_FLIGHT = 256
MAX_HEADERS = 20
MAX_HEADER_VALUE_LENGTH = 1024
# Long enough for any sensible filter; short enough that no nesting exhausts the parser.
MAX_FILTER_LENGTH = 1024
# Compared in lower case; `webhook-*` is refused as a prefix.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "user-agent",
        "traceparent",
        "x-webhook-infermedica-token",
    }
)
RESERVED_PREFIX = "webhook-"
# RFC 9110 `token`.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
HEADER_VALUE = re.compile(r"[\x20-\x7e]*")


class FilterError(ValueError):
    """A filter that does not compile; the message names the position."""


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """`headers` if every name and value may be sent as SPEC 13 says; otherwise
    `ValueError` naming the first header at fault."""
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, value in headers.items():
        lower = name.lower()
        if HEADER_NAME.fullmatch(name) is None:
            raise ValueError(f"header name {name!r} is not an HTTP token")
        if lower in RESERVED_HEADERS or lower.startswith(RESERVED_PREFIX):
            raise ValueError(f"header {name!r} is set by the service and cannot be overridden")
        if lower in seen:
            raise ValueError(f"header {name!r} is given twice (names ignore case)")
        seen.add(lower)
        if len(value) > MAX_HEADER_VALUE_LENGTH or HEADER_VALUE.fullmatch(value) is None:
            raise ValueError(
                f"header {name!r}: the value must be printable ASCII (space included), "
                f"at most {MAX_HEADER_VALUE_LENGTH} characters"
            )
    return headers


@lru_cache(maxsize=1024)
def compile_filter(expression: str) -> ParsedResult:
    """The compiled JMESPath `expression`, cached by its text (the fan-out evaluates the
    same few filters over and over); `FilterError` naming the position if it does not
    compile, e.g. `content.answers.q1 ==` -> "incomplete expression at position 21"."""
    try:
        return jmespath.compile(expression)
    except jmespath_errors.LexerError as exc:
        raise FilterError(_where(exc.lexer_position, exc.message)) from None
    except jmespath_errors.IncompleteExpressionError as exc:
        raise FilterError(_where(exc.lex_position, "incomplete expression")) from None
    except jmespath_errors.ParseError as exc:
        raise FilterError(_where(exc.lex_position, f"unexpected {exc.token_value!r}")) from None
    except jmespath_errors.EmptyExpressionError:
        raise FilterError("is empty") from None
    except RecursionError:
        raise FilterError("nests too deeply") from None


def _where(position: int, problem: str) -> str:
    return f"does not compile: {problem} at position {position}"


def _truthy(value: Any) -> bool:
    """JMESPath's truth: false, null, and empty strings, arrays and objects are false;
    every number is true, 0 included."""
    if value is None or value is False:
        return False
    return not (isinstance(value, str | list | dict) and len(value) == 0)


def passes(expression: str | None, event_type: str, content: dict[str, Any]) -> bool:
    """Whether an event goes to a configuration with this `filter`: evaluated over the
    full body `{"event_type", "content"}`. An expression that fails at run time (a
    function given the wrong type, `>` between a string and a number) lets nothing
    through, like a false one. Never raises: one event must not stop the fan-out."""
    if expression is None:
        return True
    body = {"event_type": event_type, "content": content}
    try:
        return _truthy(compile_filter(expression).search(body))
    except Exception as exc:  # jmespath raises TypeError too, and FilterError, RecursionError
        logger.warning("filter failed on an event, not delivered: %s", type(exc).__name__)
        return False


def body_for(event_type: str, content: dict[str, Any], payload: str) -> str:
    """The request body for a configuration with this `payload`: a thin survey event
    carries only the survey's id; every other event goes whole."""
    if payload == Payload.THIN and event_type in SURVEY_EVENTS:
        return event_body(event_type, {"id": content.get("id")})
    return event_body(event_type, content)


def headers_json(headers: dict[str, str]) -> str:
    return json.dumps(headers, separators=(",", ":"))
