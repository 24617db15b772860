"""The `webhooks` command (SPEC 2, 3): clients, migrations and clear start-up failures."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from core.clients import AUTH_CACHE_TTL_S
from core.database import open_database
from service.app import create_app
from tests.conftest import make_settings
from tests.processes import WEBHOOKS, process_env, web_server
from tests.processes import webhooks_fails as _fails_clearly
from tests.processes import webhooks_ok as _ok
from tests.servers import free_port, postgres_database, wait_for

pytestmark = pytest.mark.e2e  # every test runs the CLI as a process

CONFIGS = "/api/v2/config/webhook"


def _json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    """A new SQLite file that no command has touched yet."""
    return process_env(DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}")


async def _status_with_key(database_url: str, api_key: str) -> int:
    app = create_app(make_settings(database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            response = await api.get(CONFIGS, headers={"Authorization": f"Bearer {api_key}"})
            return response.status_code


# --- clients ----------------------------------------------------------------------------


async def test_client_create_prints_one_json_line(sqlite_env: dict[str, str]) -> None:
    output = _ok("client", "create", "Clinic Kraków", env=sqlite_env)

    assert len(output.strip().splitlines()) == 1, output
    created = json.loads(output)
    assert set(created) == {"id", "name", "api_key"}
    assert created["name"] == "Clinic Kraków"
    assert uuid.UUID(created["id"])
    assert len(created["api_key"]) >= 32
    assert await _status_with_key(sqlite_env["DATABASE_URL"], created["api_key"]) == 200


async def test_client_list_never_shows_keys_or_hashes(sqlite_env: dict[str, str]) -> None:
    created = [json.loads(_ok("client", "create", name, env=sqlite_env)) for name in "ab"]

    output = _ok("client", "list", env=sqlite_env)

    listed = _json_lines(output)
    assert [(c["id"], c["name"]) for c in listed] == [(c["id"], c["name"]) for c in created]
    for client in listed:
        assert not any("key" in field or "hash" in field for field in client), client
        assert client["revoked_at"] is None
    for client in created:
        assert client["api_key"] not in output
        assert hashlib.sha256(client["api_key"].encode()).hexdigest() not in output


async def test_client_revoke_makes_the_key_answer_401(sqlite_env: dict[str, str]) -> None:
    revoked, kept = (json.loads(_ok("client", "create", n, env=sqlite_env)) for n in "rk")
    database_url = sqlite_env["DATABASE_URL"]

    _ok("client", "revoke", revoked["id"], env=sqlite_env)

    assert await _status_with_key(database_url, revoked["api_key"]) == 401
    assert await _status_with_key(database_url, kept["api_key"]) == 200
    listed = {c["id"]: c for c in _json_lines(_ok("client", "list", env=sqlite_env))}
    assert listed[revoked["id"]]["revoked_at"] is not None
    assert listed[kept["id"]]["revoked_at"] is None


def test_client_revoke_of_an_unknown_or_revoked_client_fails(sqlite_env: dict[str, str]) -> None:
    created = json.loads(_ok("client", "create", "once", env=sqlite_env))
    _ok("client", "revoke", created["id"], env=sqlite_env)

    _fails_clearly("client", "revoke", created["id"], env=sqlite_env, mentions=created["id"])
    unknown = str(uuid.uuid4())
    _fails_clearly("client", "revoke", unknown, env=sqlite_env, mentions=unknown)


# --- migrate ----------------------------------------------------------------------------


async def _tables(database_url: str) -> set[str]:
    db = open_database(database_url)
    await db.connect()
    try:
        if database_url.startswith("sqlite"):
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            query = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        return {str(row[0]) for row in await db.fetch_all(sa.text(query))}
    finally:
        await db.disconnect()


EXPECTED_TABLES = {"alembic_version", "clients", "webhook_configs", "deliveries", "outbox"}


async def test_migrate_creates_the_schema_on_sqlite(sqlite_env: dict[str, str]) -> None:
    assert "up to date" in _ok("migrate", env=sqlite_env)
    assert "up to date" in _ok("migrate", env=sqlite_env)  # and again: nothing to do
    assert await _tables(sqlite_env["DATABASE_URL"]) >= EXPECTED_TABLES


async def test_migrate_creates_the_schema_on_postgresql() -> None:
    with postgres_database() as url:
        env = process_env(DATABASE_URL=url)
        assert "up to date" in _ok("migrate", env=env)
        assert "up to date" in _ok("migrate", env=env)
        assert await _tables(url) >= EXPECTED_TABLES


async def test_postgres_scheme_alias_is_accepted(postgresql_url: str) -> None:
    alias = "postgres://" + postgresql_url.removeprefix("postgresql://")
    _ok("migrate", env=process_env(DATABASE_URL=alias))


# --- clear failures ---------------------------------------------------------------------

BAD_DATABASE_URLS = [
    ("mysql://root@127.0.0.1/webhooks", "DATABASE_URL"),
    ("not a url", "DATABASE_URL"),
    ("postgresql://u:s3cr3t-pw@127.0.0.1:1/webhooks", "could not migrate"),
    ("postgresql://u:s3cr3t-pw@no-such-host.invalid/webhooks", "could not migrate"),
    ("sqlite:////proc/no/such/dir/webhooks.db", "could not migrate"),
    # No file: every pooled connection would get a private, empty database.
    ("sqlite:///", "DATABASE_URL"),
    ("sqlite:///:memory:", "DATABASE_URL"),
]


@pytest.mark.parametrize(("database_url", "mentions"), BAD_DATABASE_URLS)
def test_bad_database_url_exits_1_with_a_clear_message(database_url: str, mentions: str) -> None:
    env = process_env(DATABASE_URL=database_url)
    assert "s3cr3t-pw" not in _fails_clearly("migrate", env=env, mentions=mentions)


@pytest.mark.parametrize("database_url", ["mysql://root@127.0.0.1/webhooks", "sqlite:///"])
def test_every_command_checks_the_database_url(database_url: str) -> None:
    env = process_env(DATABASE_URL=database_url)
    _fails_clearly("client", "create", "x", env=env, mentions="DATABASE_URL")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WEBHOOKS_MAX_ATTEMPTS", "abc"),
        ("WEBHOOKS_MAX_ATTEMPTS", "0"),
        ("PORT", "abc"),
        ("WEBHOOKS_REQUEST_TIMEOUT_S", "-1"),
        ("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "maybe"),
    ],
)
def test_invalid_setting_exits_1_naming_the_variable(
    sqlite_env: dict[str, str], variable: str, value: str
) -> None:
    _fails_clearly("migrate", env={**sqlite_env, variable: value}, mentions=variable)


@pytest.mark.parametrize("command", [["web"], ["client", "list"]])
def test_every_command_checks_the_settings(sqlite_env: dict[str, str], command: list[str]) -> None:
    env = {**sqlite_env, "WEBHOOKS_MAX_ATTEMPTS": "abc"}
    _fails_clearly(*command, env=env, mentions="WEBHOOKS_MAX_ATTEMPTS")


def test_backoff_order_is_checked(sqlite_env: dict[str, str]) -> None:
    env = {**sqlite_env, "WEBHOOKS_MIN_BACKOFF_MS": "1000", "WEBHOOKS_MAX_BACKOFF_MS": "10"}
    _fails_clearly("migrate", env=env, mentions="WEBHOOKS_MAX_BACKOFF_MS")


def test_revoking_with_the_cli_reaches_a_running_web_process(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    """A running `web` caches keys it has just seen for AUTH_CACHE_TTL_S: a revocation
    from another process applies within that bound, never later."""
    port = free_port()
    env = {**sqlite_env, "PORT": str(port)}
    with web_server([WEBHOOKS, "web"], env=env, port=port, log=tmp_path / "web.log") as base:
        created = json.loads(_ok("client", "create", "soon revoked", env=env))
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        assert httpx.get(base + CONFIGS, headers=headers).status_code == 200

        _ok("client", "revoke", created["id"], env=env)
        wait_for(
            lambda: httpx.get(base + CONFIGS, headers=headers).status_code == 401,
            timeout_s=AUTH_CACHE_TTL_S + 1,
            what="the revoked key to be refused",
        )
