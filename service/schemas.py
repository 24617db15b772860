"""Request and response models: they validate bodies and generate the OpenAPI schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic.config import JsonDict

from core.events import EventType

MAX_URL_LENGTH = 2048


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http or https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("must not contain user information")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts.port  # noqa: B018 - raises for an invalid port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value


def _fold_duplicates(events: list[EventType]) -> list[EventType]:
    return list(dict.fromkeys(events))


WebhookUrl = Annotated[
    str,
    StringConstraints(max_length=MAX_URL_LENGTH, pattern=r"^[hH][tT][tT][pP][sS]?://"),
    AfterValidator(_check_url),
    WithJsonSchema({"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH}),
]
# 16-256 printable ASCII characters, no space: it goes into an HTTP header.
AuthorizationToken = Annotated[
    str, StringConstraints(min_length=16, max_length=256, pattern=r"^[\x21-\x7e]+$")
]
SubscribedEvents = Annotated[
    list[EventType], Field(min_length=1, max_length=100), AfterValidator(_fold_duplicates)
]


class ConfigCreate(Strict):
    url: WebhookUrl
    authorization_token: AuthorizationToken | None = None
    subscribed_events: SubscribedEvents


class ConfigUpdate(Strict):
    url: WebhookUrl | None = None
    authorization_token: AuthorizationToken | None = None
    subscribed_events: SubscribedEvents | None = None
    enabled: Annotated[bool, Field(strict=True)] | None = Field(
        None,
        description="true re-enables a disabled configuration (its held deliveries are "
        "sent); false disables it by hand (`disabled_reason`: `manual`).",
    )

    @field_validator("url", "authorization_token", "subscribed_events", "enabled", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Omit a field to leave it alone; an explicit null would silently do nothing.
        if value is None:
            raise ValueError("must not be null (omit the field to leave it unchanged)")
        return value


class Config(BaseModel):
    """A configuration. `authorization_token` and `signing_secret` appear only where
    SPEC 5 includes them; `disabled_reason` only while disabled."""

    id: str
    url: str
    subscribed_events: list[str]
    enabled: bool
    disabled_reason: Literal["gone", "failing", "manual"] | None = None
    authorization_token: str | None = None
    signing_secret: str | None = None


class ConfigList(RootModel[list[Config]]):
    pass


class SigningSecret(BaseModel):
    signing_secret: str


class EventTypeInfo(BaseModel):
    name: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema")


class EventTypeList(RootModel[list[EventTypeInfo]]):
    pass


class OpenApiDocument(RootModel[dict[str, Any]]):
    """An OpenAPI 3.1 document."""


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] | None = None


class Error(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: str
    checks: dict[str, str] | None = None


def config_view(
    row: dict[str, Any], *, with_token: bool = False, with_secret: bool = False
) -> dict[str, Any]:
    """The JSON of a configuration row, token and secret only when asked for."""
    view = Config(
        id=row["id"],
        url=row["url"],
        subscribed_events=row["subscribed_events"],
        enabled=row["enabled"],
        disabled_reason=None if row["enabled"] else row.get("disabled_reason"),
        authorization_token=row["authorization_token"] if with_token else None,
        signing_secret=row["signing_secret"] if with_secret else None,
    )
    return view.model_dump(mode="json", exclude_none=True)


class SurveyCreate(Strict):
    patient_id: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    answers: dict[str, Any] = Field(default_factory=dict)


class SurveyUpdate(Strict):
    status: Literal["completed"]
    answers: dict[str, Any] | None = None


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("is outside the range of UTC times") from None


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]

DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled", "held"]


class DeliveryQuery(Strict):
    model_config = ConfigDict(extra="ignore")

    status: DeliveryStatus | None = None
    event_type: Literal["survey_created", "survey_finished", "ping"] | None = None
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None
    limit: int = Field(50, ge=1, le=100)
    cursor: str | None = Field(None, max_length=512)


class DeliveryItem(BaseModel):
    id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    created_at: AwareDatetime
    last_attempt_at: AwareDatetime | None
    next_attempt_at: AwareDatetime | None
    delivered_at: AwareDatetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryItem]
    next_cursor: str | None


class Attempt(BaseModel):
    number: int
    started_at: AwareDatetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None


class DeliveryDetail(DeliveryItem):
    attempts: list[Attempt]


class Accepted(BaseModel):
    delivery_id: str
    status: Literal["pending"]


class RecoverRequest(Strict):
    since: UtcDatetime
    until: UtcDatetime | None = None


class Recovered(BaseModel):
    redelivered: int


class PingSent(BaseModel):
    delivery_id: str


PORTAL_TTL_DEFAULT_S = 3600

ConfigId = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ),
    AfterValidator(str.lower),
    WithJsonSchema({"type": "string", "format": "uuid"}),
]


def _portal_session_schema(schema: JsonDict) -> None:
    """`config_id` may be omitted, never null: the document does not offer null."""
    properties = schema["properties"]
    assert isinstance(properties, dict)
    config_id = properties["config_id"]
    assert isinstance(config_id, dict)
    branches = config_id.pop("anyOf")
    assert isinstance(branches, list)
    [kept] = [branch for branch in branches if branch != {"type": "null"}]
    assert isinstance(kept, dict)
    config_id.update(kept)
    config_id.pop("default")


class PortalSessionCreate(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_portal_session_schema)

    config_id: ConfigId | None = Field(
        None, description="Scope the session to this one configuration of the client."
    )
    ttl_s: Annotated[int, Field(strict=True, ge=60, le=86400)] = Field(
        PORTAL_TTL_DEFAULT_S, description="How long the link, and the session it opens, last."
    )

    @field_validator("config_id", "ttl_s", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null (omit the field for the default)")
        return value


class PortalSession(BaseModel):
    url: str = Field(description="Opens the portal once, until `expires_at`.")
    expires_at: AwareDatetime
