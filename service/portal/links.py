"""Magic links and CSRF tokens: HMAC-SHA256 under the portal's key, no I/O.

A link's token is `<base64url JSON claims>.<base64url signature>`; the claims are the
link's id (which makes it single-use, see `data.open_session`), the client, the
configuration (or None) and the expiry in Unix seconds. Each use of the key is
derived for its purpose, so a signature made for one can never pass for another.

    >>> key = b"k" * 32
    >>> token = sign_link(key, Link("9f...", "client", None, 1_900_000_000))
    >>> read_link(key, token, now_s=1_800_000_000).client_id
    'client'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass

_LINK = b"portal-link"
_CSRF = b"portal-csrf"
MAX_TOKEN_LENGTH = 1024


class BadLink(Exception):
    """A link's token is forged, malformed or expired (which one is not told)."""


@dataclass(frozen=True)
class Link:
    link_id: str
    client_id: str
    config_id: str | None
    expires_at_s: int


def _derived(key: bytes, purpose: bytes) -> bytes:
    return hmac.new(key, purpose, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, purpose: bytes, message: str) -> str:
    return _b64(hmac.new(_derived(key, purpose), message.encode(), hashlib.sha256).digest())


def sign_link(key: bytes, link: Link) -> str:
    claims = _b64(json.dumps(asdict(link), separators=(",", ":")).encode())
    return f"{claims}.{_mac(key, _LINK, claims)}"


def read_link(key: bytes, token: str, *, now_s: float) -> Link:
    """The link's claims if `token` was signed with `key` and has not expired."""
    claims, _, signature = token.partition(".")
    if len(token) > MAX_TOKEN_LENGTH or not _same(signature, _mac(key, _LINK, claims)):
        raise BadLink("bad signature")
    try:
        link = Link(**json.loads(_unb64(claims)))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise BadLink("malformed claims") from exc
    if link.expires_at_s <= now_s:
        raise BadLink("expired")
    return link


def new_cookie() -> tuple[str, str]:
    """A session cookie's random value and the hash under which it is stored."""
    value = secrets.token_urlsafe(32)
    return value, cookie_hash(value)


def cookie_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def csrf_token(key: bytes, session_id: str) -> str:
    """The CSRF token of every form of a session: bound to it, so that it is useless
    in another one and needs no storage."""
    return _mac(key, _CSRF, session_id)


def csrf_ok(key: bytes, session_id: str, token: str | None) -> bool:
    return token is not None and _same(token, csrf_token(key, session_id))


def _same(given: str, expected: str) -> bool:
    """In constant time; `given` may be any text (compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(given.encode(), expected.encode())
