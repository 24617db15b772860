"""`v1a` signatures (SPEC 16): ed25519 over `"{webhook-id}.{webhook-timestamp}.{body}"`,
checked with the verifier the README gives receivers (`examples/verify_v1a.py`)."""

from __future__ import annotations

import base64

import pytest
from freezegun import freeze_time
from standardwebhooks import Webhook

from core.signing_keys import (
    SignatureScheme,
    new_private_key,
    new_signing_key,
    new_signing_secret,
    private_key,
    public_key,
    scheme_of,
    shown_key,
)
from tests.v1a import VerificationError, verify
from workers.signing import sign, webhook_headers

BODY = b'{"event_type": "survey_created", "content": {"id": "s1"}}'
NOW = "2025-03-01T12:00:00Z"
NOW_S = 1_740_830_400


def _headers(*keys: str, body: bytes = BODY) -> dict[str, str]:
    return webhook_headers(msg_id="msg_1", body=body, token="tok", secrets=list(keys))


def test_keys_have_the_spec_format() -> None:
    key = new_private_key()
    shown = public_key(key)

    assert key.startswith("whsk_") and len(base64.b64decode(key.removeprefix("whsk_"))) == 32
    assert shown.startswith("whpk_") and len(base64.b64decode(shown.removeprefix("whpk_"))) == 32
    assert shown_key(key) == {"signing_public_key": shown}
    assert scheme_of(key) == SignatureScheme.V1A
    assert scheme_of(new_signing_key(SignatureScheme.V1)) == SignatureScheme.V1


def test_a_v1_secret_is_shown_as_it_is() -> None:
    secret = new_signing_secret()
    assert shown_key(secret) == {"signing_secret": secret}


def test_the_signature_is_v1a_and_64_bytes_of_ed25519() -> None:
    signature = sign(msg_id="msg_1", timestamp_s=NOW_S, body=BODY, secret=new_private_key())

    version, encoded = signature.split(",")
    assert version == "v1a"
    assert len(base64.b64decode(encoded)) == 64


@freeze_time(NOW)
def test_the_verifier_accepts_what_the_service_signs() -> None:
    key = new_private_key()
    assert verify(BODY, _headers(key), public_key=public_key(key)) == {
        "event_type": "survey_created",
        "content": {"id": "s1"},
    }


@freeze_time(NOW)
@pytest.mark.parametrize(
    ("header", "forged"),
    [("webhook-id", "msg_2"), ("webhook-timestamp", str(NOW_S - 1))],
)
def test_a_tampered_id_or_timestamp_fails(header: str, forged: str) -> None:
    key = new_private_key()
    headers = _headers(key)
    verify(BODY, headers, public_key=public_key(key))

    with pytest.raises(VerificationError):
        verify(BODY, {**headers, header: forged}, public_key=public_key(key))


@freeze_time(NOW)
def test_a_tampered_body_fails() -> None:
    key = new_private_key()
    headers = _headers(key)

    with pytest.raises(VerificationError):
        verify(BODY.replace(b"s1", b"s2"), headers, public_key=public_key(key))


@freeze_time(NOW)
def test_another_key_fails() -> None:
    headers = _headers(new_private_key())
    with pytest.raises(VerificationError):
        verify(BODY, headers, public_key=public_key(new_private_key()))


def test_a_stale_timestamp_fails() -> None:
    key = new_private_key()
    with freeze_time(NOW):
        headers = _headers(key)
    with freeze_time("2025-03-01T12:06:00Z"), pytest.raises(VerificationError):
        verify(BODY, headers, public_key=public_key(key))


@freeze_time(NOW)
def test_during_a_rotation_either_key_verifies() -> None:
    new, old = new_private_key(), new_private_key()
    headers = _headers(new, old)

    assert [entry.split(",")[0] for entry in headers["webhook-signature"].split(" ")] == [
        "v1a",
        "v1a",
    ]
    for key in (new, old):
        verify(BODY, headers, public_key=public_key(key))


@freeze_time(NOW)
def test_after_a_switch_from_v1_both_schemes_sign() -> None:
    key, secret = new_private_key(), new_signing_secret()
    headers = _headers(key, secret)

    verify(BODY, headers, public_key=public_key(key))
    Webhook(secret).verify(BODY, headers)


def test_a_private_key_is_loaded_once() -> None:
    key = new_private_key()
    before = private_key.cache_info().misses

    for timestamp_s in range(5):
        sign(msg_id="m", timestamp_s=timestamp_s, body=BODY, secret=key)

    assert private_key.cache_info().misses == before + 1
