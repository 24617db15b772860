"""Standard Webhooks signatures (https://www.standardwebhooks.com) and the request headers.

The signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`, HMAC-SHA256 keyed
with the bytes a `whsec_<base64>` secret encodes, sent as `v1,<base64 digest>`. While a
secret is being rotated both secrets sign, and `webhook-signature` carries both,
space-separated, so a receiver holding either one accepts the request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
USER_AGENT = "webhooks-delivery/0.1"


def secret_key(secret: str) -> bytes:
    """The HMAC key of `whsec_<base64>`; accepts what the `standardwebhooks` library does,
    including unpadded base64 and a secret without the prefix."""
    # Extra padding is ignored by b64decode, and makes unpadded secrets decode.
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")
    if not key:
        raise ValueError("signing secret is empty")
    return key


def sign(*, msg_id: str, timestamp_s: int, body: bytes, secret: str) -> str:
    """`v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp_s}.{body}">`."""
    content = f"{msg_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_header(*, msg_id: str, timestamp_s: int, body: bytes, secrets: Sequence[str]) -> str:
    """One signature per secret, space-separated: `v1,abc= v1,def=`."""
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
