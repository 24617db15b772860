"""The portal's settings (SPEC 12): validated at start-up, a secret never in a message."""

from __future__ import annotations

import pytest

from core.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "WEBHOOKS_PUBLIC_URL",
        "WEBHOOKS_PORTAL_FRAME_ANCESTORS",
        "WEBHOOKS_PORTAL_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()

    assert settings.public_url is None
    assert settings.portal_frame_ancestors == "'self'"
    assert settings.portal_secret is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://hooks.example.com/", "https://hooks.example.com"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("https://example.com/webhooks/", "https://example.com/webhooks"),
        ("", None),
    ],
)
def test_public_url(monkeypatch: pytest.MonkeyPatch, value: str, expected: str | None) -> None:
    monkeypatch.setenv("WEBHOOKS_PUBLIC_URL", value)

    assert load_settings().public_url == expected


@pytest.mark.parametrize(
    "value",
    [
        "hooks.example.com",
        "ftp://example.com",
        "https://",
        "https://a@example.com",
        "https://example.com/?x=1",
    ],
)
def test_a_bad_public_url_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WEBHOOKS_PUBLIC_URL", value)

    with pytest.raises(SettingsError, match="WEBHOOKS_PUBLIC_URL"):
        load_settings()


@pytest.mark.parametrize(
    "value",
    ["'self'", "'none'", "'self' https://app.example.com", "https:", "https://*.example.com:443"],
)
def test_frame_ancestors(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("WEBHOOKS_PORTAL_FRAME_ANCESTORS", f"  {value} ")

    assert load_settings().portal_frame_ancestors == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "'self'; script-src *",
        "'self', https://a.example",
        "'none' 'self'",
        "'unsafe-inline'",
        "javascript:alert(1)",
    ],
)
def test_frame_ancestors_that_would_break_the_policy_are_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("WEBHOOKS_PORTAL_FRAME_ANCESTORS", value)

    with pytest.raises(SettingsError, match="WEBHOOKS_PORTAL_FRAME_ANCESTORS"):
        load_settings()


def test_a_short_portal_secret_is_refused_and_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_PORTAL_SECRET", "too-short-s3cr3t")

    with pytest.raises(SettingsError, match="WEBHOOKS_PORTAL_SECRET") as raised:
        load_settings()

    assert "s3cr3t" not in str(raised.value)


def test_the_portal_secret_is_not_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_PORTAL_SECRET", "x" * 40)

    settings = load_settings()

    assert settings.portal_secret is not None
    assert "x" * 40 not in repr(settings)
    assert settings.portal_secret.get_secret_value() == "x" * 40
