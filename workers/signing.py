"""Standard Webhooks signatures (https://www.standardwebhooks.com) and the request headers.

The signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`. A `whsec_<base64>`
secret signs it with HMAC-SHA256 keyed with the bytes it encodes, sent as
`v1,<base64 digest>`; a `whsk_<base64>` private key signs it with ed25519, sent as
`v1a,<base64 signature>` (SPEC 16). While a key is being rotated both keys sign, each by
its own kind, and `webhook-signature` carries both, space-separated, so a receiver
holding either one accepts the request.
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Sequence
from functools import lru_cache

from core.signing_keys import (
    LOADED_KEYS_MAX,
    PRIVATE_KEY_PREFIX,
    SIGNING_SECRET_PREFIX,
    private_key,
)

SECRET_PREFIX = SIGNING_SECRET_PREFIX
SIGNATURE_VERSION = "v1"
ED25519_SIGNATURE_VERSION = "v1a"
USER_AGENT = "webhooks-delivery/0.1"


@lru_cache(maxsize=LOADED_KEYS_MAX)
def secret_key(secret: str) -> bytes:
    """The HMAC key of `whsec_<base64>`; accepts what the `standardwebhooks` library does,
    including unpadded base64 and a secret without the prefix. Decoded once per secret,
    then taken from a cache, as `private_key` is: a worker signs with the same few."""
    # Extra padding is ignored by b64decode, and makes unpadded secrets decode.
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")
    if not key:
        raise ValueError("signing secret is empty")
    return key


def sign(*, msg_id: str, timestamp_s: int, body: bytes, secret: str) -> str:
    """`v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp_s}.{body}">` for a `whsec_`
    secret; `v1a,<base64 ed25519 signature of the same>` for a `whsk_` private key."""
    content = f"{msg_id}.{timestamp_s}.".encode() + body
    if secret.startswith(PRIVATE_KEY_PREFIX):
        signature = private_key(secret).sign(content)
        return f"{ED25519_SIGNATURE_VERSION},{base64.b64encode(signature).decode()}"
    # The one-shot form: no HMAC object per signature.
    digest = hmac.digest(secret_key(secret), content, "sha256")
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_header(*, msg_id: str, timestamp_s: int, body: bytes, secrets: Sequence[str]) -> str:
    """One signature per secret (or private key), space-separated: `v1,abc= v1a,def=`."""
    if not secrets:
        raise ValueError("at least one signing secret is required")
    return " ".join(
        sign(msg_id=msg_id, timestamp_s=timestamp_s, body=body, secret=secret) for secret in secrets
    )


def webhook_headers(
    *,
    msg_id: str,
    body: bytes,
    token: str,
    secrets: Sequence[str],
    timestamp_s: int | None = None,
) -> dict[str, str]:
    """Every header of a delivery (SPEC 6), signed now unless `timestamp_s` is given.

    `msg_id` is the delivery's id: the same on every retry, so receivers can deduplicate.
    """
    if timestamp_s is None:
        timestamp_s = int(time.time())
    return {
        "content-type": "application/json",
        "x-webhook-infermedica-token": token,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature_header(
            msg_id=msg_id, timestamp_s=timestamp_s, body=body, secrets=secrets
        ),
        "user-agent": USER_AGENT,
    }
