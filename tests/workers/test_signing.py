"""Signatures as the official `standardwebhooks` library verifies them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from freezegun import freeze_time
from standardwebhooks import Webhook, WebhookVerificationError

from core.configs import new_signing_secret
from tests.receivers import SPEC_HEADERS
from workers.signing import USER_AGENT, sign, signature_header, webhook_headers

BODY = b'{"event_type": "survey_created", "content": {"id": "s1"}}'
NOW = "2025-03-01T12:00:00Z"
NOW_S = 1_740_830_400


def test_sign_matches_the_standard_webhooks_library() -> None:
    secret = new_signing_secret()
    ours = sign(msg_id="msg_1", timestamp_s=NOW_S, body=BODY, secret=secret)
    with freeze_time(NOW):
        theirs = Webhook(secret).sign("msg_1", datetime.now(UTC), BODY.decode())
    assert ours == theirs
    assert ours.startswith("v1,")


def test_sign_accepts_unpadded_base64_like_the_library() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signature = sign(msg_id="msg_1", timestamp_s=NOW_S, body=BODY, secret=secret)
    with freeze_time(NOW):
        Webhook(secret).verify(BODY, _signed("msg_1", signature))


@freeze_time(NOW)
def test_headers_verify_with_a_single_secret() -> None:
    secret = new_signing_secret()
    headers = webhook_headers(msg_id="msg_1", body=BODY, token="tok", secrets=[secret])

    assert Webhook(secret).verify(BODY, headers) == {
        "event_type": "survey_created",
        "content": {"id": "s1"},
    }
    assert headers["webhook-timestamp"] == str(NOW_S)


@freeze_time(NOW)
def test_headers_are_exactly_those_of_the_spec() -> None:
    headers = webhook_headers(
        msg_id="msg_1", body=BODY, token="tok", secrets=[new_signing_secret()]
    )

    assert set(headers) == SPEC_HEADERS
    assert headers["content-type"] == "application/json"
    assert headers["x-webhook-infermedica-token"] == "tok"
    assert headers["webhook-id"] == "msg_1"
    assert headers["user-agent"] == USER_AGENT


@freeze_time(NOW)
def test_during_rotation_either_secret_verifies() -> None:
    new, previous = new_signing_secret(), new_signing_secret()
    headers = webhook_headers(msg_id="msg_1", body=BODY, token="tok", secrets=[new, previous])

    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, previous):
        Webhook(secret).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(BODY, headers)


@freeze_time(NOW)
def test_a_tampered_body_fails_verification() -> None:
    secret = new_signing_secret()
    headers = webhook_headers(msg_id="msg_1", body=BODY, token="tok", secrets=[secret])

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"s1", b"s2"), headers)


def test_an_explicit_timestamp_is_signed_and_sent() -> None:
    secret = new_signing_secret()
    headers = webhook_headers(
        msg_id="msg_1", body=BODY, token="tok", secrets=[secret], timestamp_s=NOW_S - 60
    )

    assert headers["webhook-timestamp"] == str(NOW_S - 60)
    with freeze_time(NOW):
        Webhook(secret).verify(BODY, headers)


def test_a_stale_timestamp_is_refused_by_receivers() -> None:
    secret = new_signing_secret()
    with freeze_time("2025-03-01T11:00:00Z"):
        headers = webhook_headers(msg_id="msg_1", body=BODY, token="tok", secrets=[secret])

    with freeze_time(NOW), pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)


def test_signature_header_needs_a_secret() -> None:
    with pytest.raises(ValueError):
        signature_header(msg_id="msg_1", timestamp_s=NOW_S, body=BODY, secrets=[])


def _signed(msg_id: str, signature: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(NOW_S),
        "webhook-signature": signature,
    }
