"""Verify a `v1a` (ed25519) Standard Webhooks signature, as SPEC 16 defines it: what a
receiver of a `signature_scheme: "v1a"` configuration runs on its side.

The signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`; `webhook-signature`
holds one or more space-separated `version,<base64 signature>` entries (two while a key
rotates): the request is genuine if one `v1a` entry verifies with the configuration's
public key `whpk_<base64 of the 32-byte raw key>` (from `GET .../secret`).

    from verify_v1a import verify
    event = verify(body, request.headers, public_key="whpk_...")  # raises on a forgery

Or from the shell, with the body on stdin:

    python examples/verify_v1a.py whpk_... WEBHOOK_ID TIMESTAMP "v1a,..." < body.json
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PUBLIC_KEY_PREFIX = "whpk_"
VERSION = "v1a"
# A timestamp further than this from now is refused, as Standard Webhooks libraries do:
# a captured request cannot be replayed later.
TOLERANCE_S = 5 * 60


class VerificationError(Exception):
    """The request is not signed by the key, or its timestamp is out of tolerance."""


def load_public_key(public_key: str) -> Ed25519PublicKey:
    """The key of `whpk_<base64>`; `VerificationError` if it is not one."""
    try:
        raw = base64.b64decode(public_key.removeprefix(PUBLIC_KEY_PREFIX), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError("not a whpk_ public key") from exc


def _check_timestamp(timestamp: str, *, now_s: float, tolerance_s: int) -> None:
    if not timestamp.isdigit():
        raise VerificationError("webhook-timestamp is not a Unix time in seconds")
    if abs(now_s - int(timestamp)) > tolerance_s:
        raise VerificationError("webhook-timestamp is too far from now")


def _signatures(header: str) -> list[bytes]:
    """The `v1a` signatures of `webhook-signature` (entries of other versions skipped)."""
    found = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != VERSION:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except binascii.Error:
            continue
    return found


def verify(
    body: bytes,
    headers: Mapping[str, str],
    *,
    public_key: str,
    tolerance_s: int = TOLERANCE_S,
    now_s: float | None = None,
) -> Any:
    """The parsed body if one `v1a` signature in `headers` (lower-case names, as HTTP
    libraries give them) verifies with `public_key` and the timestamp is within
    `tolerance_s` of `now_s` (default: now); otherwise `VerificationError`."""
    try:
        msg_id = headers["webhook-id"]
        timestamp = headers["webhook-timestamp"]
        header = headers["webhook-signature"]
    except KeyError as exc:
        raise VerificationError(f"missing header {exc.args[0]}") from None
    _check_timestamp(
        timestamp, now_s=time.time() if now_s is None else now_s, tolerance_s=tolerance_s
    )
    key = load_public_key(public_key)
    content = f"{msg_id}.{timestamp}.".encode() + body
    for signature in _signatures(header):
        try:
            key.verify(signature, content)
        except InvalidSignature:
            continue
        return json.loads(body)
    raise VerificationError("no v1a signature matches")


if __name__ == "__main__":
    key, webhook_id, webhook_timestamp, signature = sys.argv[1:5]
    received = {
        "webhook-id": webhook_id,
        "webhook-timestamp": webhook_timestamp,
        "webhook-signature": signature,
    }
    try:
        verify(sys.stdin.buffer.read(), received, public_key=key)
    except VerificationError as error:
        sys.exit(f"rejected: {error}")
    print("verified")
