"""Operational events (SPEC 15): `webhook_disabled`, `webhook_enabled` and
`delivery_failed`, each an outbox row written in the transaction of the change that
causes it, and sent to the client's other configurations (never the one it is about:
`source_config_id`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from core.database import Query
from core.event_rows import event_insert, event_params
from core.events import EventType


def _event(
    client_id: str, config_id: str, event_type: EventType, content: Mapping[str, object]
) -> Query:
    params = event_params(
        client_id=client_id,
        event_type=event_type,
        content={"config_id": config_id, **content},
        source_config_id=config_id,
    )
    return event_insert(params)


def webhook_disabled(
    *, client_id: str, config_id: str, url: str, disabled_reason: str, at: datetime
) -> Query:
    content = {"url": url, "disabled_reason": disabled_reason, "at": at.isoformat()}
    return _event(client_id, config_id, EventType.WEBHOOK_DISABLED, content)


def webhook_enabled(
    *, client_id: str, config_id: str, url: str, released: int, at: datetime
) -> Query:
    content = {"url": url, "released": released, "at": at.isoformat()}
    return _event(client_id, config_id, EventType.WEBHOOK_ENABLED, content)


def delivery_failed(
    *,
    client_id: str,
    config_id: str,
    delivery_id: str,
    event_id: str,
    event_type: str,
    attempts: int,
    last_error: str | None,
    last_status_code: int | None,
    at: datetime,
) -> Query:
    content = {
        "delivery_id": delivery_id,
        "event_id": event_id,
        "event_type": event_type,
        "attempts": attempts,
        "last_error": last_error,
        "last_status_code": last_status_code,
        "at": at.isoformat(),
    }
    return _event(client_id, config_id, EventType.DELIVERY_FAILED, content)
