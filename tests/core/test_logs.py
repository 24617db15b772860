"""Log formatting (SPEC 10): the ids passed through `extra=` end up on the line, as JSON
fields with `--log-format json` and as `key=value` pairs in text."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from core.logs import CONTEXT_KEYS, JsonFormatter, TextFormatter, configure_logging

CONTEXT = {
    "event_id": "5f0c8a2e-0000-4000-8000-000000000001",
    "delivery_id": "5f0c8a2e-0000-4000-8000-000000000002",
    "config_id": "5f0c8a2e-0000-4000-8000-000000000003",
    "client_id": "5f0c8a2e-0000-4000-8000-000000000004",
    "attempt": 3,
    "status_code": 503,
}


def _record(
    message: str = "attempt %d %s",
    args: tuple[object, ...] = (3, "pending"),
    *,
    extra: dict[str, object] | None = None,
    exc_info: bool = False,
) -> logging.LogRecord:
    info = None
    if exc_info:
        try:
            raise TimeoutError("slow receiver")
        except TimeoutError:
            info = sys.exc_info()
    record = logging.getLogger("webhooks.worker").makeRecord(
        "webhooks.worker", logging.INFO, __file__, 1, message, args, info, extra=extra
    )
    return record


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("databases", "httpx", "httpcore")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


def test_the_context_keys_are_the_delivery_ids_and_the_attempt() -> None:
    assert set(CONTEXT) == set(CONTEXT_KEYS)


def test_a_json_line_is_one_object_with_the_message_and_every_context_key() -> None:
    line = JsonFormatter().format(_record(extra=CONTEXT))

    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "attempt 3 pending"
    assert (parsed["level"], parsed["logger"]) == ("info", "webhooks.worker")
    assert parsed["time"]
    for key, value in CONTEXT.items():
        assert parsed[key] == value


def test_a_json_line_leaves_out_context_that_is_absent_or_none() -> None:
    parsed = json.loads(
        JsonFormatter().format(_record(extra={"delivery_id": "d-1", "status_code": None}))
    )

    assert parsed["delivery_id"] == "d-1"
    assert not set(parsed) & (set(CONTEXT_KEYS) - {"delivery_id"})


def test_a_json_line_names_the_exception_without_a_traceback() -> None:
    parsed = json.loads(JsonFormatter().format(_record(extra=CONTEXT, exc_info=True)))

    assert parsed["error"] == "TimeoutError"
    assert "Traceback" not in json.dumps(parsed)


def test_a_json_line_stays_json_for_values_json_cannot_encode() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque"

    parsed = json.loads(
        JsonFormatter().format(_record("a %s", ("newline\nin it",), extra={"event_id": Opaque()}))
    )

    assert (parsed["message"], parsed["event_id"]) == ("a newline\nin it", "opaque")


def test_a_text_line_ends_with_the_context_as_key_value_pairs() -> None:
    line = TextFormatter().format(_record(extra=CONTEXT))

    assert " INFO webhooks.worker: attempt 3 pending " in line
    for key, value in CONTEXT.items():
        assert f"{key}={value}" in line


def test_a_text_line_without_context_is_just_the_message() -> None:
    line = TextFormatter().format(_record())

    assert line.endswith("INFO webhooks.worker: attempt 3 pending")


def test_configure_logging_json_emits_one_json_object_a_line(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(log_format="json", level="INFO")
    logger = logging.getLogger("webhooks.worker")

    logger.info("attempt %d %s", 1, "delivered", extra=CONTEXT)
    logger.debug("not at INFO")
    logging.getLogger("databases").info("query arguments would be here")

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    parsed = json.loads(lines[0])
    assert parsed["message"] == "attempt 1 delivered"
    assert parsed["delivery_id"] == CONTEXT["delivery_id"]
    assert parsed["event_id"] == CONTEXT["event_id"]


def test_configure_logging_text_by_default(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging()

    logging.getLogger("webhooks.poller").info("poller started", extra={"config_id": "c-1"})

    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith("INFO webhooks.poller: poller started config_id=c-1")
