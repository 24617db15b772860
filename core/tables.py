"""Every table of the service, defined once (SQLAlchemy Core).

Ids are UUID strings; timestamps are timezone-aware UTC (`UTCDateTime`). The database,
not the queue, is the source of truth for every delivery: its status, attempt count,
due time (`next_attempt_at`) and lease (`lease_expires_at`) live here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A datetime stored in UTC and always read back timezone-aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite stores text; strip the zone so that text comparison stays ordered.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        assert isinstance(moment, datetime)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


class Json(sa.types.TypeDecorator[Any]):
    """JSON that reads back parsed on every driver (asyncpg through `databases` hands
    back the text)."""

    impl = sa.JSON
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return json.loads(value) if isinstance(value, str) else value


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(36), primary_key=True)


clients = sa.Table(
    "clients",
    metadata,
    _id(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("api_key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

webhook_configs = sa.Table(
    "webhook_configs",
    metadata,
    _id(),
    sa.Column("client_id", sa.String(36), sa.ForeignKey("clients.id"), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("authorization_token", sa.String(256), nullable=False),
    sa.Column("subscribed_events", Json, nullable=False),
    sa.Column("signing_secret", sa.String(100), nullable=False),
    sa.Column("previous_signing_secret", sa.String(100), nullable=True),
    sa.Column("previous_secret_expires_at", UTCDateTime, nullable=True),
    # "v1" (HMAC, `signing_secret` is a `whsec_` secret) or "v1a" (ed25519, a `whsk_`
    # private key that never leaves the service); a stored key's prefix says its kind.
    sa.Column("signature_scheme", sa.String(8), nullable=False, server_default="v1"),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("disabled_reason", sa.String(32), nullable=True),
    sa.Column("failing_since", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Soft delete: the audit trail of a deleted configuration stays queryable by operators.
    sa.Column("deleted_at", UTCDateTime, nullable=True),
    # Delivery controls (SPEC 13); null or the server default means the control is off.
    sa.Column("filter", sa.Text, nullable=True),
    sa.Column("ordering", sa.String(8), nullable=False, server_default="none"),
    sa.Column("rate_limit_per_s", sa.Integer, nullable=True),
    sa.Column("max_in_flight", sa.Integer, nullable=True),
    sa.Column("headers", Json, nullable=False, server_default="{}"),
    sa.Column("payload", sa.String(8), nullable=False, server_default="full"),
    sa.Index(None, "client_id", "deleted_at"),
)

surveys = sa.Table(
    "surveys",
    metadata,
    _id(),
    sa.Column("client_id", sa.String(36), sa.ForeignKey("clients.id"), nullable=False),
    sa.Column("patient_id", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("answers", Json, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("completed_at", UTCDateTime, nullable=True),
)

outbox = sa.Table(
    "outbox",
    metadata,
    # An integer key gives the poller a cheap, ordered claim.
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("event_id", sa.String(36), nullable=False, unique=True),
    sa.Column("client_id", sa.String(36), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("content", Json, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("dispatched_at", UTCDateTime, nullable=True),
    # What an operational event (SPEC 15) is about: never sent to that configuration.
    sa.Column("source_config_id", sa.String(36), nullable=True),
    # The W3C trace context of the request that caused the event (SPEC 17).
    sa.Column("traceparent", sa.String(55), nullable=True),
    sa.Index(None, "dispatched_at", "seq"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    _id(),
    sa.Column("config_id", sa.String(36), sa.ForeignKey("webhook_configs.id"), nullable=False),
    sa.Column("client_id", sa.String(36), nullable=False),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    # The exact body sent on every attempt, so that retries are byte-identical.
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("last_attempt_at", UTCDateTime, nullable=True),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    # The event's outbox seq (a ping's: the newest seq when it was made): the order in
    # which a `fifo` configuration's deliveries go (SPEC 13). Null on rows made before it.
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=True),
    # Why a pending delivery waits unattempted (`rate_limited`, `max_in_flight`,
    # `ordering`); cleared by its next attempt.
    sa.Column("waiting_reason", sa.String(16), nullable=True),
    # Its event's `traceparent`: each attempt's span is a child of it (SPEC 17).
    sa.Column("traceparent", sa.String(55), nullable=True),
    # One delivery per (event, configuration), however many pollers fan out at once.
    sa.UniqueConstraint("event_id", "config_id"),
    sa.Index(None, "config_id", "created_at"),
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "config_id", "seq"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("delivery_id", sa.String(36), sa.ForeignKey("deliveries.id"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.String(32), nullable=True),
    sa.Column("response_body", sa.Text, nullable=True),
    sa.Index(None, "delivery_id", "number"),
)

# Keys the service makes for itself once and keeps (the portal's signing key when
# WEBHOOKS_PORTAL_SECRET is unset), so that every process of one database shares them.
service_keys = sa.Table(
    "service_keys",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

portal_sessions = sa.Table(
    "portal_sessions",
    metadata,
    _id(),
    # The magic link that opened the session: unique, so that a link opens one session.
    sa.Column("link_id", sa.String(36), nullable=False, unique=True),
    # SHA-256 of the cookie's random value, which is never stored.
    sa.Column("cookie_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("client_id", sa.String(36), sa.ForeignKey("clients.id"), nullable=False),
    # Set when the session sees one configuration only.
    sa.Column("config_id", sa.String(36), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Index(None, "expires_at"),
)

# The first answer to a request that carried an `Idempotency-Key` (SPEC 14), kept until
# `expires_at`. The key row is inserted first in the transaction that does the request's
# writes, so the primary key decides which of concurrent requests writes: the others
# wait for it (PostgreSQL) or run after it (SQLite's one writer) and replay its answer.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("client_id", sa.String(36), sa.ForeignKey("clients.id"), primary_key=True),
    # The method and the path, e.g. "PATCH /api/v2/surveys/<id>".
    sa.Column("route", sa.String(300), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    # SHA-256 of the request body, canonical JSON: a retry must send the same body.
    sa.Column("request_hash", sa.String(64), nullable=False),
    # Set in the same transaction as the row itself: a committed row always has both.
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("body", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index(None, "expires_at"),
)

# The record of each erasure (SPEC 14): who asked, when, and what it emptied. The patient
# is named only by a keyed hash (`core.erasures.patient_hash`), never in clear, so the
# record proves an erasure without keeping what it erased.
erasures = sa.Table(
    "erasures",
    metadata,
    _id(),
    sa.Column("client_id", sa.String(36), sa.ForeignKey("clients.id"), nullable=False),
    # HMAC-SHA256, hex, of the client and patient ids, keyed with the service's erasure key.
    sa.Column("patient_hash", sa.String(64), nullable=False),
    sa.Column("erased_at", UTCDateTime, nullable=False),
    sa.Column("surveys", sa.Integer, nullable=False),
    sa.Column("deliveries", sa.Integer, nullable=False),
    sa.Index(None, "client_id", "patient_hash"),
)
