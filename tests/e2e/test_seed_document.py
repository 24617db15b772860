"""The seed document's curl examples, replayed against `web` started from the Procfile.

Each answer is held to SPEC 5 (which adds `signing_secret` on create and `enabled`
everywhere, SPEC 9) and the seed's trailing-comma token update to SPEC 1 (a 400 whose
message names the position). WEBHOOKS_ALLOW_PRIVATE_TARGETS is unset, as in production:
`mywebsite.com` is accepted because it does not resolve to a private address.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import procfile
from tests.processes import process_env, run_webhooks, web_server
from tests.servers import free_port

pytestmark = pytest.mark.e2e

# The seed's --data-raw bodies, byte for byte.
CREATE = b"""{
"url": "https://mywebsite.com/webhook_receiver",
"authorization_token": "zGORr7q1I4egIr0c0eKXD7CMpIcjFooJ",
"subscribed_events": ["survey_created"]
}"""
UPDATE_NON_TOKEN = b"""{
"url": "https://mywebsite.com/webhook_receiver",
"subscribed_events": ["survey_created"]
}"""
UPDATE_TOKEN = b"""{
"authorization_token": "zGORr7q1I4egIr0c0eKXD7CMpIcjFooJ",
}"""
UPDATE_TOKEN_AS_JSON = UPDATE_TOKEN.replace(b'",\n}', b'"\n}')

URL = "https://mywebsite.com/webhook_receiver"
TOKEN = "zGORr7q1I4egIr0c0eKXD7CMpIcjFooJ"
# SPEC 5's fields, the signature scheme (SPEC 16) and the delivery controls (SPEC 13).
CONTROLS = {"filter", "ordering", "rate_limit_per_s", "max_in_flight", "headers", "payload"}
VIEW = {"id", "url", "subscribed_events", "enabled", "signature_scheme"} | CONTROLS


@pytest.fixture(params=["sqlite", "postgresql"])
def seed_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[httpx.Client]:
    """`web` as the Procfile runs it, and a client that sends what curl sends."""
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'seed.db'}"  # web creates and migrates it
    else:
        database_url = str(request.getfixturevalue("postgresql_url"))
    port = free_port()
    env = process_env(DATABASE_URL=database_url, PORT=str(port))
    command = ["bash", "-c", procfile()["web"]]
    with web_server(command, env=env, port=port, log=tmp_path / "web.log") as base_url:
        created = run_webhooks("client", "create", "seed", env=env)
        assert created.returncode == 0, created.stderr
        headers = {
            "Authorization": f"Bearer {json.loads(created.stdout)['api_key']}",
            "Content-Type": "application/json",
        }
        with httpx.Client(
            base_url=f"{base_url}/api/v2", headers=headers, follow_redirects=True, timeout=30
        ) as client:
            yield client


def test_procfile_declares_the_three_processes() -> None:
    assert list(procfile()) == ["web", "poller", "worker"]


def test_seed_curl_examples(seed_api: httpx.Client) -> None:
    # Register a configuration.
    created = seed_api.post("/config/webhook", content=CREATE)
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == VIEW | {"authorization_token", "signing_secret"}
    assert (body["url"], body["authorization_token"]) == (URL, TOKEN)
    assert body["subscribed_events"] == ["survey_created"]
    assert body["signing_secret"].startswith("whsec_")
    assert body["enabled"] is True
    one = f"/config/webhook/{body['id']}"
    expected_view = {
        "id": body["id"],
        "url": URL,
        "subscribed_events": ["survey_created"],
        "signature_scheme": "v1",
        **{name: body[name] for name in CONTROLS},  # their defaults
    }

    # Update non-token data: the token is omitted.
    updated = seed_api.patch(one, content=UPDATE_NON_TOKEN)
    assert updated.status_code == 200, updated.text
    assert updated.json() == {**expected_view, "enabled": True}

    # Update the token, exactly as the seed writes it: the trailing comma is not JSON.
    refused = seed_api.patch(one, content=UPDATE_TOKEN)
    assert refused.status_code == 400, refused.text
    assert set(refused.json()) == {"error"}
    message = refused.json()["error"]["message"]
    assert "line 3 column 1" in message and "char 61" in message, message

    # The same update as JSON: the token is included.
    token_updated = seed_api.patch(one, content=UPDATE_TOKEN_AS_JSON)
    assert token_updated.status_code == 200, token_updated.text
    assert token_updated.json() == {**expected_view, "enabled": True, "authorization_token": TOKEN}

    # All configurations, tokens excluded.
    listed = seed_api.get("/config/webhook")
    assert listed.status_code == 200, listed.text
    assert listed.json() == [{**expected_view, "enabled": True}]

    # One configuration, token excluded.
    fetched = seed_api.get(one)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == {**expected_view, "enabled": True}

    # Delete: the deleted configuration, token excluded; then it is gone.
    deleted = seed_api.delete(one)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {**expected_view, "enabled": True}
    gone = seed_api.get(one)
    assert gone.status_code == 404, gone.text
    assert set(gone.json()["error"]) >= {"code", "message"}
    assert seed_api.get("/config/webhook").json() == []

    for response in (created, updated, refused, token_updated, listed, fetched, deleted, gone):
        assert response.headers["content-type"].startswith("application/json")
