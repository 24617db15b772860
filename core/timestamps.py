"""Timestamps as SPEC 8 defines them: ISO 8601 strings with an offset, in answers and in
requests alike, never a number and never a local time without an offset.

`RequestTime` reads one from a request: an RFC 3339 `date-time` string such as
`2024-05-01T12:00:00Z`, `2024-05-01T12:00:00.25+00:00` or `2024-05-01T14:00:00+02:00`,
turned into the same instant in UTC. A number, a numeric string (no Unix-time guessing),
a date alone, a time without seconds or without an offset, or any other spelling that
pydantic alone would accept is refused. `UTC_TIMESTAMP_PATTERN` is that rule, written
once for the route and for the OpenAPI document, so the two cannot disagree.

`AnswerTime` is one in an answer: an aware datetime, rendered in UTC with a `Z`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, PlainValidator, WithJsonSchema

_DATE = r"(?!0000)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
_OFFSET = r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
# On the first and the last day a datetime can name, another offset could move the
# instant out of range: there, only a UTC offset.
_NO_OFFSET_AT_THE_EDGES = r"(?!(?:0001-01-01|9999-12-31)T[0-9:.]*[+-](?!00:00))"
TIMESTAMP_PATTERN = f"^{_NO_OFFSET_AT_THE_EDGES}{_DATE}T{_TIME}{_OFFSET}$"
"""What a request may send (an ECMA 262 and a Python regular expression alike)."""
UTC_TIMESTAMP_PATTERN = f"^{_DATE}T{_TIME}Z$"
"""What an answer carries."""

_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
_MESSAGE = (
    "must be an ISO 8601 date and time with seconds and an offset, such as"
    " 2024-05-01T12:00:00Z (a number or a time without an offset is refused)"
)


def parse_timestamp(value: Any) -> datetime:
    """The instant, in UTC, that a request's timestamp names; `ValueError` for anything
    else (`parse_timestamp(0)` and `parse_timestamp("2024-05-01T12:00:00")` included).

    >>> parse_timestamp("2024-05-01T14:00:00+02:00").isoformat()
    '2024-05-01T12:00:00+00:00'
    """
    if not isinstance(value, str) or _TIMESTAMP.fullmatch(value) is None:
        raise ValueError(_MESSAGE)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"is not a date that exists: {_MESSAGE}") from None
    return moment.astimezone(UTC)


def _in_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


RequestTime = Annotated[
    datetime,
    PlainValidator(parse_timestamp),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "description": "ISO 8601 with seconds and an offset, e.g. 2024-05-01T12:00:00Z",
        }
    ),
]
AnswerTime = Annotated[
    AwareDatetime,
    AfterValidator(_in_utc),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": UTC_TIMESTAMP_PATTERN}),
]
