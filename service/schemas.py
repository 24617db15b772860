"""Request and response models: they validate bodies and generate the OpenAPI schemas."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic.config import JsonDict

from core.controls import (
    MAX_FILTER_LENGTH,
    MAX_IN_FLIGHT,
    MAX_RATE_LIMIT_PER_S,
    FilterError,
    check_headers,
    compile_filter,
)
from core.events import EventType
from core.signing_keys import DEFAULT_SCHEME, SignatureScheme, shown_key
from core.timestamps import AnswerTime, RequestTime

MAX_URL_LENGTH = 2048


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# An absolute http(s) URL with a host part and no user-info, spaces or control characters,
# as the OpenAPI document says. The route checks this and, besides, what a pattern cannot
# say: a valid port and IPv6 literal, no Unicode space (whose set differs between regex
# dialects), and the SSRF rule of SPEC 5, which depends on what the host resolves to.
URL_PATTERN = r"^[hH][tT][tT][pP][sS]?://[^\x00-\x20\x7f@/?#]+(?:[/?#][^\x00-\x20\x7f]*)?$"
_URL = re.compile(URL_PATTERN)


def _check_url(value: str) -> str:
    """`value` if it matches `URL_PATTERN` and `urlsplit` finds a host and a valid port in
    it; otherwise `ValueError` saying what is wrong."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("must not contain user information")
    if _URL.fullmatch(value) is None or not parts.hostname:
        raise ValueError("must be an absolute http or https URL")
    try:
        parts.port  # noqa: B018 - raises for an invalid port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value


def _fold_duplicates(events: list[EventType]) -> list[EventType]:
    return list(dict.fromkeys(events))


WebhookUrl = Annotated[
    str,
    StringConstraints(max_length=MAX_URL_LENGTH),
    AfterValidator(_check_url),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": MAX_URL_LENGTH,
            "pattern": URL_PATTERN,
            "description": "An absolute http or https URL without user information.",
        }
    ),
]
# 16-256 printable ASCII characters, no space: it goes into an HTTP header.
AuthorizationToken = Annotated[
    str, StringConstraints(min_length=16, max_length=256, pattern=r"^[\x21-\x7e]+$")
]
SubscribedEvents = Annotated[
    list[EventType], Field(min_length=1, max_length=100), AfterValidator(_fold_duplicates)
]


_SCHEME_TEXT = (
    "How deliveries are signed: `v1` (HMAC-SHA256 with `signing_secret`) or `v1a` (ed25519; "
    "receivers verify with `signing_public_key`)."
)


def _compiles(expression: str) -> str:
    try:
        compile_filter(expression)
    except FilterError as exc:
        raise ValueError(str(exc)) from None
    return expression


Filter = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_FILTER_LENGTH),
    AfterValidator(_compiles),
    Field(
        description="A JMESPath expression over the body `{event_type, content}`: only events "
        "for which it is truthy are delivered.",
        examples=["content.answers.q1 == 'yes'"],
    ),
]
Ordering = Annotated[
    Literal["none", "fifo"],
    Field(description="`fifo`: one attempt at a time, in the order the events were committed."),
]
RateLimit = Annotated[
    int,
    Field(
        strict=True,
        ge=1,
        le=MAX_RATE_LIMIT_PER_S,
        description="At most this many attempts start in any one-second window.",
    ),
]
InFlightLimit = Annotated[
    int,
    Field(strict=True, ge=1, le=MAX_IN_FLIGHT, description="At most this many attempts at once."),
]
ExtraHeaders = Annotated[
    dict[Annotated[str, StringConstraints(max_length=256)], Annotated[str, Field(strict=True)]],
    Field(
        max_length=20,
        description="Extra request headers; reserved names (content-type, content-length, "
        "host, user-agent, traceparent, x-webhook-infermedica-token, webhook-*) are refused.",
    ),
    AfterValidator(check_headers),
]
PayloadMode = Annotated[
    Literal["full", "thin"],
    Field(description="`thin`: survey events carry only `content.id`."),
]
# The delivery controls (SPEC 13) and their defaults: a PATCH with null restores these.
CONTROL_DEFAULTS: dict[str, Any] = {
    "filter": None,
    "ordering": "none",
    "rate_limit_per_s": None,
    "max_in_flight": None,
    "headers": {},
    "payload": "full",
}


class ConfigCreate(Strict):
    url: WebhookUrl
    authorization_token: AuthorizationToken | None = None
    subscribed_events: SubscribedEvents
    signature_scheme: SignatureScheme = Field(DEFAULT_SCHEME, description=_SCHEME_TEXT)
    filter: Filter | None = None
    ordering: Ordering = "none"
    rate_limit_per_s: RateLimit | None = None
    max_in_flight: InFlightLimit | None = None
    headers: ExtraHeaders = Field(default_factory=dict)
    payload: PayloadMode = "full"

    def controls(self) -> dict[str, Any]:
        return self.model_dump(include=set(CONTROL_DEFAULTS))


def _without_null(schema: JsonDict) -> None:
    """Optional fields that refuse `null` (or, in a query, cannot carry it): the document
    offers neither `null` nor a `null` default for them. (The fields stay `X | None`, not
    `SkipJsonSchema`, so that their errors name the field alone, not a union member.)"""
    properties = schema["properties"]
    assert isinstance(properties, dict)
    for prop in properties.values():
        assert isinstance(prop, dict)
        branches = prop.pop("anyOf", None)
        if isinstance(branches, list):
            [kept] = [branch for branch in branches if branch != {"type": "null"}]
            assert isinstance(kept, dict)
            prop.update(kept)
        if prop.get("default", ...) is None:
            del prop["default"]


def _patch_schema(schema: JsonDict) -> None:
    """A PATCH body as the route takes it: at least one field; null only for the delivery
    controls (it restores the default)."""
    properties = schema["properties"]
    assert isinstance(properties, dict)
    controls = {name: properties.pop(name) for name in CONTROL_DEFAULTS}
    _without_null(schema)
    for name, prop in controls.items():
        assert isinstance(prop, dict)
        prop.pop("default", None)  # absent means unchanged, not null
        properties[name] = prop
    schema["minProperties"] = 1


class ConfigUpdate(Strict):
    """A PATCH body: each field present is changed; an absent one is left alone. `null`
    is refused (it would silently do nothing), so the document does not offer it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_patch_schema)

    url: WebhookUrl | None = None
    authorization_token: AuthorizationToken | None = None
    subscribed_events: SubscribedEvents | None = None
    enabled: Annotated[bool, Field(strict=True)] | None = Field(
        None,
        description="true re-enables a disabled configuration (its held deliveries are "
        "sent); false disables it by hand (`disabled_reason`: `manual`).",
    )
    signature_scheme: SignatureScheme | None = Field(
        None,
        description=_SCHEME_TEXT + " Switching makes a key of the new kind, returned in the "
        "answer; the old key keeps signing for 24 hours.",
    )

    filter: Filter | None = None
    ordering: Ordering | None = None
    rate_limit_per_s: RateLimit | None = None
    max_in_flight: InFlightLimit | None = None
    headers: ExtraHeaders | None = None
    payload: PayloadMode | None = None

    @field_validator(
        "url",
        "authorization_token",
        "subscribed_events",
        "enabled",
        "signature_scheme",
        mode="before",
    )
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Omit a field to leave it alone; an explicit null would silently do nothing.
        if value is None:
            raise ValueError("must not be null (omit the field to leave it unchanged)")
        return value

    def changes(self) -> dict[str, Any]:
        """The columns to change: every field given, a control given as null put back
        to its default."""
        given = self.model_dump(include=self.model_fields_set)
        return {
            name: CONTROL_DEFAULTS[name] if value is None and name in CONTROL_DEFAULTS else value
            for name, value in given.items()
        }


class Config(BaseModel):
    """A configuration. `authorization_token` and the signing key (`signing_secret` for
    `v1`, `signing_public_key` for `v1a`) appear only where SPEC 5 and 16 include them,
    and when a `PATCH` switched the scheme; `disabled_reason` only while disabled."""

    id: str
    url: str
    subscribed_events: list[str]
    enabled: bool
    disabled_reason: Literal["gone", "failing", "manual"] | None = None
    signature_scheme: SignatureScheme
    authorization_token: str | None = None
    signing_secret: str | None = None
    signing_public_key: str | None = None
    filter: str | None
    ordering: Literal["none", "fifo"]
    rate_limit_per_s: int | None
    max_in_flight: int | None
    headers: dict[str, str]
    payload: Literal["full", "thin"]


class ConfigList(RootModel[list[Config]]):
    pass


class SigningSecret(BaseModel):
    """The HMAC secret of a `v1` configuration."""

    signing_secret: str


class SigningPublicKey(BaseModel):
    """The ed25519 public key of a `v1a` configuration; its private key never leaves
    the service."""

    signing_public_key: str = Field(pattern=r"^whpk_[A-Za-z0-9+/]{43}=$")


class SigningKey(RootModel[SigningSecret | SigningPublicKey]):
    """What a client sees of its configuration's signing key, by its scheme."""


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
    """The JSON of a configuration row, token and signing key only when asked for (the
    key as `signing_keys.shown_key` shows it: never a private key); the delivery controls
    always, null included."""
    view = Config(
        id=row["id"],
        url=row["url"],
        subscribed_events=row["subscribed_events"],
        enabled=row["enabled"],
        disabled_reason=None if row["enabled"] else row.get("disabled_reason"),
        signature_scheme=row["signature_scheme"],
        authorization_token=row["authorization_token"] if with_token else None,
        **(shown_key(row["signing_secret"]) if with_secret else {}),
        **{name: row.get(name, default) for name, default in CONTROL_DEFAULTS.items()},
    )
    shown = view.model_dump(mode="json")
    optional = ("disabled_reason", "authorization_token", "signing_secret", "signing_public_key")
    return {key: value for key, value in shown.items() if key not in optional or value is not None}


PATIENT_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
PatientId = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=PATIENT_ID_PATTERN)
]
"""A patient id as surveys take it: 1 to 200 characters, no control characters."""


class SurveyCreate(Strict):
    patient_id: PatientId
    answers: dict[str, Any] = Field(default_factory=dict)


class SurveyUpdate(Strict):
    status: Literal["completed"]
    answers: dict[str, Any] | None = None


DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled", "held"]


def _decimal_digits(value: Any) -> Any:
    # A query value is text: only plain digits are an integer (not " 5", "+5", "5.0", "5_0").
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number written in decimal digits")
    return value


class DeliveryQuery(Strict):
    """The query of `GET .../deliveries`. Every parameter is optional, and none can be
    `null`: a query string cannot carry it."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=_without_null)

    status: DeliveryStatus | None = None
    event_type: (
        Literal[
            "survey_created",
            "survey_finished",
            "webhook_disabled",
            "webhook_enabled",
            "delivery_failed",
            "ping",
        ]
        | None
    ) = None
    since: RequestTime | None = None
    until: RequestTime | None = None
    limit: Annotated[int, BeforeValidator(_decimal_digits)] = Field(50, ge=1, le=100)
    cursor: str | None = Field(None, max_length=512)


class DeliveryItem(BaseModel):
    id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    created_at: AnswerTime
    last_attempt_at: AnswerTime | None
    next_attempt_at: AnswerTime | None
    delivered_at: AnswerTime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryItem]
    next_cursor: str | None


class Attempt(BaseModel):
    number: int
    started_at: AnswerTime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None


class DeliveryDetail(DeliveryItem):
    attempts: list[Attempt]
    waiting_reason: Literal["rate_limited", "max_in_flight", "ordering"] | None = Field(
        None,
        description="Why a pending delivery waits unattempted (a delivery control, SPEC 13); "
        "null once it is attempted.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="The configuration's extra request headers, sent on every attempt.",
    )


class Accepted(BaseModel):
    delivery_id: str
    status: Literal["pending"]


class RecoverRequest(Strict):
    since: RequestTime
    until: RequestTime | None = None


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

    @field_validator("ttl_s", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        # JSON Schema's integer includes 444.0, so the route takes it too; not "444".
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value


class PortalSession(BaseModel):
    url: str = Field(description="Opens the portal once, until `expires_at`.")
    expires_at: AnswerTime


class PatientPath(Strict):
    """The path of `POST /patients/{patient_id}/erase`."""

    patient_id: PatientId


class Erasure(BaseModel):
    """What an erasure emptied (SPEC 14)."""

    surveys: int = Field(description="The client's surveys of the patient, now erased.")
    deliveries: int = Field(
        description="Deliveries of their events whose payload was emptied; the pending "
        "and held ones among them were cancelled."
    )
