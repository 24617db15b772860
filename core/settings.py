"""The one `Settings` object, read from the environment and validated at start-up.

Names are exactly those of SPEC section 2 (`DATABASE_URL`, `REDIS_URL`, `PORT`,
`WEBHOOKS_*`). An invalid value stops the process with a message that names the
variable; a secret never appears in that message.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.database.urls import SQLITE, DatabaseUrl, parse_database_url

DEFAULT_DATABASE_URL = "sqlite:///./webhooks.db"
DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_MIN_BACKOFF_MS = 5_000
DEFAULT_MAX_BACKOFF_MS = 10 * 60 * 60 * 1000
DEFAULT_REQUEST_TIMEOUT_S = 15.0
DEFAULT_DELIVERY_LEASE_S = 60.0
DEFAULT_DISABLE_AFTER_S = 5 * 24 * 60 * 60
DEFAULT_RETENTION_S = 90 * 24 * 60 * 60
DEFAULT_PORTAL_FRAME_ANCESTORS = "'self'"
MIN_PORTAL_SECRET_LENGTH = 32

# One source of a CSP source list: a keyword, a scheme (`https:`) or a host source
# (`https://*.example.com:443/path`). Nothing that could end the directive (`;`, `,`).
_CSP_SOURCE = re.compile(
    r"'self'|'none'|[a-z][a-z0-9+.-]*:"
    r"|([a-z][a-z0-9+.-]*://)?(\*|(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*)(:(\d{1,5}|\*))?(/[^\s;,']*)?",
    re.IGNORECASE,
)


class SettingsError(Exception):
    """A setting is missing or invalid; the message is safe to print."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, arbitrary_types_allowed=True)

    # Parsed here, once: every consumer takes the `DatabaseUrl`.
    database_url: Annotated[
        DatabaseUrl,
        NoDecode,
        BeforeValidator(parse_database_url),
        PlainSerializer(lambda url: url.redacted),
    ] = Field(parse_database_url(DEFAULT_DATABASE_URL), validation_alias="DATABASE_URL")
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")
    port: int = Field(8000, ge=1, le=65535, validation_alias="PORT")
    allow_private_targets: bool = Field(False, validation_alias="WEBHOOKS_ALLOW_PRIVATE_TARGETS")
    max_attempts: int = Field(
        DEFAULT_MAX_ATTEMPTS, ge=1, le=100, validation_alias="WEBHOOKS_MAX_ATTEMPTS"
    )
    min_backoff_ms: int = Field(
        DEFAULT_MIN_BACKOFF_MS, ge=0, validation_alias="WEBHOOKS_MIN_BACKOFF_MS"
    )
    max_backoff_ms: int = Field(
        DEFAULT_MAX_BACKOFF_MS, ge=0, validation_alias="WEBHOOKS_MAX_BACKOFF_MS"
    )
    request_timeout_s: float = Field(
        DEFAULT_REQUEST_TIMEOUT_S,
        gt=0,
        le=300,
        validation_alias="WEBHOOKS_REQUEST_TIMEOUT_S",
    )
    delivery_lease_s: float = Field(
        DEFAULT_DELIVERY_LEASE_S,
        gt=0,
        validation_alias="WEBHOOKS_DELIVERY_LEASE_S",
    )
    disable_after_s: float = Field(
        DEFAULT_DISABLE_AFTER_S, gt=0, validation_alias="WEBHOOKS_DISABLE_AFTER_S"
    )
    retention_s: float = Field(DEFAULT_RETENTION_S, ge=0, validation_alias="WEBHOOKS_RETENTION_S")
    prune_interval_s: float = Field(3600, gt=0, validation_alias="WEBHOOKS_PRUNE_INTERVAL_S")
    poll_interval_s: float = Field(1.0, gt=0, validation_alias="WEBHOOKS_POLL_INTERVAL_S")
    worker_concurrency: int = Field(
        32, ge=1, le=1024, validation_alias="WEBHOOKS_WORKER_CONCURRENCY"
    )
    endpoint_concurrency_setting: int | None = Field(
        None, ge=1, le=1024, validation_alias="WEBHOOKS_ENDPOINT_CONCURRENCY"
    )
    public_url: str | None = Field(None, validation_alias="WEBHOOKS_PUBLIC_URL")
    portal_frame_ancestors: str = Field(
        DEFAULT_PORTAL_FRAME_ANCESTORS, validation_alias="WEBHOOKS_PORTAL_FRAME_ANCESTORS"
    )
    portal_secret: SecretStr | None = Field(
        None, min_length=MIN_PORTAL_SECRET_LENGTH, validation_alias="WEBHOOKS_PORTAL_SECRET"
    )
    # SPEC 17: spans are exported over OTLP/HTTP when set (`core.tracing`), else not at all.
    otel_exporter_otlp_endpoint: str | None = Field(
        None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "must be an absolute http or https URL, e.g. https://hooks.example.com"
            )
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must have no user information, query or fragment")
        return value.rstrip("/")

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _otlp_endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http or https URL, e.g. http://collector:4318")
        return value

    @field_validator("portal_frame_ancestors")
    @classmethod
    def _frame_ancestors(cls, value: str) -> str:
        sources = value.split()
        if not sources or not all(_CSP_SOURCE.fullmatch(source) for source in sources):
            raise ValueError(
                "must be a CSP source list, e.g. 'self' https://app.example.com (no ; or ,)"
            )
        if "'none'" in sources and len(sources) > 1:
            raise ValueError("'none' must stand alone")
        return " ".join(sources)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_backoff_ms < self.min_backoff_ms:
            raise ValueError("WEBHOOKS_MAX_BACKOFF_MS must be >= WEBHOOKS_MIN_BACKOFF_MS")
        if self.delivery_lease_s <= self.request_timeout_s:
            # A lease that ends mid-request lets a second worker send the same delivery.
            raise ValueError("WEBHOOKS_DELIVERY_LEASE_S must be > WEBHOOKS_REQUEST_TIMEOUT_S")
        return self

    @property
    def endpoint_concurrency(self) -> int:
        """Attempts to one configuration at once in a worker process: the setting, or a
        quarter of the worker's concurrency, so that three hanging endpoints still leave
        a quarter of every worker to all the others."""
        share = self.endpoint_concurrency_setting or max(1, self.worker_concurrency // 4)
        return min(share, self.worker_concurrency)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.backend == SQLITE


def load_settings() -> Settings:
    """Read the environment; raise `SettingsError` naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise SettingsError(f"invalid settings: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
