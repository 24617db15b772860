"""Magic links and CSRF tokens: signed, bound to their purpose, expiring."""

from __future__ import annotations

import pytest

from service.portal.links import (
    BadLink,
    Link,
    cookie_hash,
    csrf_ok,
    csrf_token,
    new_cookie,
    read_link,
    sign_link,
)

KEY = b"k" * 32
LINK = Link("6a1f0e4e-1d0b-4a55-9d8a-4a0f8f0a1b2c", "client-1", "config-1", 2_000)


def test_a_link_reads_back_until_it_expires() -> None:
    token = sign_link(KEY, LINK)

    assert read_link(KEY, token, now_s=1_999.9) == LINK
    with pytest.raises(BadLink):
        read_link(KEY, token, now_s=2_000)


def test_a_changed_claim_breaks_the_signature() -> None:
    token = sign_link(KEY, LINK)
    other = sign_link(KEY, Link(LINK.link_id, "client-2", None, LINK.expires_at_s))
    forged = other.split(".")[0] + "." + token.split(".")[1]

    with pytest.raises(BadLink):
        read_link(KEY, forged, now_s=0)


def test_a_csrf_token_is_no_link_and_a_link_no_csrf_token() -> None:
    """Each use of the key is derived for its purpose."""
    token = csrf_token(KEY, "session-1")

    assert csrf_ok(KEY, "session-1", token)
    assert not csrf_ok(KEY, "session-2", token)
    assert not csrf_ok(b"x" * 32, "session-1", token)
    assert not csrf_ok(KEY, "session-1", None)
    assert not csrf_ok(KEY, "session-1", "é")
    with pytest.raises(BadLink):
        read_link(KEY, f"session-1.{token}", now_s=0)


def test_cookies_are_random_and_stored_as_a_hash() -> None:
    (one, one_hash), (two, _) = new_cookie(), new_cookie()

    assert one != two and len(one) >= 40
    assert one_hash == cookie_hash(one) != one
