"""Logging set-up: plain text, or one JSON object a line (`--log-format json`).

Log calls pass ids through `extra=` (`event_id`, `delivery_id`, `config_id`); those keys
end up as fields of the JSON line. Tokens and secrets are never passed to a logger.
"""

from __future__ import annotations

import json
import logging
from typing import Any

CONTEXT_KEYS = ("event_id", "delivery_id", "config_id", "client_id", "attempt", "status_code")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(
            f"{key}={getattr(record, key)}"
            for key in CONTEXT_KEYS
            if getattr(record, key, None) is not None
        )
        return f"{text} {context}" if context else text


def configure_logging(*, log_format: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library loggers may print query arguments (tokens): keep them quiet.
    logging.getLogger("databases").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # Dramatiq's "Retrying message" lines carry no delivery id; ours say the same, with ids.
    logging.getLogger("dramatiq.middleware.retries.Retries").setLevel(logging.WARNING)
