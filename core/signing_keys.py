"""Signing keys of a configuration (SPEC 6, 16): what kind each is, making new ones, and
turning a stored private key into what signs and what the client is shown.

Scheme `v1` (HMAC-SHA256): one shared secret `whsec_<base64 of 32 random bytes>`, shown to
the client. Scheme `v1a` (ed25519): a private key `whsk_<base64 of its 32-byte seed>`
that never leaves the service (it is stored in the `signing_secret` column, beside the
HMAC secrets, and is never returned or logged), and its public key
`whpk_<base64 of the 32-byte raw public key>`, which the client is shown.

A stored key's prefix says its kind, so a configuration's current and previous keys
may be of different kinds (after its scheme was switched) and each signs by its own.
"""

from __future__ import annotations

import base64
import secrets
from enum import StrEnum
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SIGNING_SECRET_PREFIX = "whsec_"
PRIVATE_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
# Private keys kept loaded: one per configuration that signs with ed25519 (two while one
# rotates), so that an attempt does not parse its key again.
LOADED_KEYS_MAX = 4096


class SignatureScheme(StrEnum):
    """A configuration's `signature_scheme`."""

    V1 = "v1"
    V1A = "v1a"


DEFAULT_SCHEME = SignatureScheme.V1


def new_signing_secret() -> str:
    """`whsec_` + base64 of 32 random bytes, as Standard Webhooks libraries expect."""
    return SIGNING_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_private_key() -> str:
    """A fresh ed25519 private key, `whsk_` + base64 of its 32-byte seed."""
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    return PRIVATE_KEY_PREFIX + base64.b64encode(seed).decode()


def new_signing_key(scheme: SignatureScheme) -> str:
    """What a configuration of `scheme` stores in `signing_secret`: a `whsec_` secret
    for `v1`, a `whsk_` private key for `v1a`."""
    return new_private_key() if scheme == SignatureScheme.V1A else new_signing_secret()


def scheme_of(stored_key: str) -> SignatureScheme:
    """The scheme a stored key signs with, by its prefix."""
    if stored_key.startswith(PRIVATE_KEY_PREFIX):
        return SignatureScheme.V1A
    return SignatureScheme.V1


@lru_cache(maxsize=LOADED_KEYS_MAX)
def private_key(stored_key: str) -> Ed25519PrivateKey:
    """The ed25519 key of `whsk_<base64>`, loaded once and then taken from a cache."""
    seed = base64.b64decode(stored_key.removeprefix(PRIVATE_KEY_PREFIX), validate=True)
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key(stored_key: str) -> str:
    """`whpk_<base64 of the raw public key>` of the private key `whsk_<base64>`."""
    raw = private_key(stored_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def shown_key(stored_key: str) -> dict[str, str]:
    """What the client may see of a stored key: `{"signing_secret": "whsec_..."}` for
    `v1`, `{"signing_public_key": "whpk_..."}` for `v1a` (never the private key)."""
    if scheme_of(stored_key) == SignatureScheme.V1A:
        return {"signing_public_key": public_key(stored_key)}
    return {"signing_secret": stored_key}
