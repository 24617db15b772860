"""`core.timestamps`: what a request may send as a time, and how an answer writes one
(SPEC 8: ISO 8601 with an offset, in answers and in requests alike)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from core.events import Survey
from core.timestamps import (
    TIMESTAMP_PATTERN,
    UTC_TIMESTAMP_PATTERN,
    AnswerTime,
    parse_timestamp,
)

NOON = datetime(2024, 5, 1, 12, tzinfo=UTC)

ACCEPTED = [
    ("2024-05-01T12:00:00Z", NOON),
    ("2024-05-01T12:00:00+00:00", NOON),
    ("2024-05-01T12:00:00-00:00", NOON),
    ("2024-05-01T14:00:00+02:00", NOON),
    ("2024-05-01T07:30:00-04:30", NOON),
    ("2024-05-01T12:00:00.25Z", NOON + timedelta(milliseconds=250)),
    ("2024-05-01T12:00:00.123456789Z", NOON + timedelta(microseconds=123456)),
    ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),
    ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ("9999-12-31T23:59:59+00:00", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
]

REFUSED: list[Any] = [
    # numbers and numeric strings: no Unix-time guessing
    0,
    0.5,
    1714564800,
    -1,
    True,
    "0",
    "0.5",
    "1714564800",
    "1714564800.5",
    "-1",
    "1e9",
    # no offset
    "2024-05-01T12:00:00",
    "2024-05-01T12:00:00.5",
    "2024-05-01 12:00:00",
    "2024-05-01",
    "12:00:00Z",
    # offsets and separators outside RFC 3339's date-time
    "2024-05-01T12:00:00+0000",
    "2024-05-01T12:00:00+00",
    "2024-05-01T12:00:00 Z",
    "2024-05-01 12:00:00Z",
    "2024-05-01t12:00:00z",
    "20240501T120000Z",
    "2024-05-01T12:00Z",
    "2024-05-01T12:00:00.Z",
    "2024-05-01T12:00:00Z\n",
    " 2024-05-01T12:00:00Z",
    "２０２４-05-01T12:00:00Z",  # noqa: RUF001 - full-width digits are digits to `\d`
    # dates and times that do not exist
    "2024-13-01T00:00:00Z",
    "2024-05-01T24:00:00Z",
    "2024-05-01T23:59:60Z",
    "2024-05-01T12:00:00+24:00",
    "0000-01-01T00:00:00Z",
    # instants outside the range of UTC times
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    None,
    [],
    {},
]
# Refused by the calendar, which the OpenAPI document leaves to `format: date-time`.
NONEXISTENT_DAYS = ["2023-02-29T00:00:00Z", "2024-04-31T00:00:00+02:00"]


@pytest.mark.parametrize(("text", "instant"), ACCEPTED)
def test_a_timestamp_with_an_offset_is_read_as_that_instant_in_utc(
    text: str, instant: datetime
) -> None:
    moment = parse_timestamp(text)
    assert moment == instant
    assert moment.tzinfo is UTC


@pytest.mark.parametrize("value", REFUSED + NONEXISTENT_DAYS, ids=repr)
def test_anything_else_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_timestamp(value)


@pytest.mark.parametrize("text", [text for text, _ in ACCEPTED])
def test_the_documented_pattern_allows_what_is_accepted(text: str) -> None:
    assert re.fullmatch(TIMESTAMP_PATTERN, text)


@pytest.mark.parametrize("value", [v for v in REFUSED if isinstance(v, str)], ids=repr)
def test_the_documented_pattern_refuses_what_is_refused(value: str) -> None:
    assert not re.fullmatch(TIMESTAMP_PATTERN, value)


class _Answer(BaseModel):
    at: AnswerTime


@pytest.mark.parametrize(
    "moment",
    [
        NOON,
        NOON.astimezone(timezone(timedelta(hours=2))),
        NOON.astimezone(timezone(timedelta(hours=-9, minutes=-30))),
        NOON + timedelta(microseconds=5),
    ],
)
def test_an_answer_writes_the_instant_in_utc_with_z(moment: datetime) -> None:
    text = _Answer(at=moment).model_dump(mode="json")["at"]
    assert re.fullmatch(UTC_TIMESTAMP_PATTERN, text), text
    assert datetime.fromisoformat(text) == moment


def test_an_answer_never_writes_a_time_without_an_offset() -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(AnswerTime).validate_python(datetime(2024, 5, 1, 12))


def _survey_row(created_at: datetime, completed_at: datetime | None) -> dict[str, Any]:
    return {
        "id": "s",
        "patient_id": "p",
        "status": "completed",
        "answers": {},
        "created_at": created_at,
        "completed_at": completed_at,
    }


def test_a_survey_writes_its_times_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    row = _survey_row(NOON.astimezone(plus_two), (NOON + timedelta(hours=1)).astimezone(plus_two))
    view = Survey.model_validate(row).model_dump(mode="json")
    assert (view["created_at"], view["completed_at"]) == (
        "2024-05-01T12:00:00Z",
        "2024-05-01T13:00:00Z",
    )


@pytest.mark.parametrize("field", ["created_at", "completed_at"])
def test_a_survey_time_without_an_offset_is_never_written(field: str) -> None:
    row = _survey_row(NOON, NOON)
    row[field] = datetime(2024, 5, 1, 12)
    with pytest.raises(ValidationError) as raised:
        Survey.model_validate(row)
    assert raised.value.errors()[0]["loc"] == (field,)
