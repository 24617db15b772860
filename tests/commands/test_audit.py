"""`webhooks deliveries list|show` (SPEC 8), run as the real command against both
backends and compared with what the API answers for the same deliveries.

The command is an operator's tool: it takes no API key and sees every client's
deliveries (`commands/audit.py`), so it is scoped by configuration, not by client.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from core import lifecycle
from core.clock import utcnow
from core.database import Database
from core.lifecycle import AttemptRecord, Health, Result, Status
from tests.conftest import NewClient
from tests.outbox.helpers import make_due, new_delivery
from tests.processes import process_env, webhooks_fails, webhooks_ok
from tests.service.support import CONFIGS, create_config

pytestmark = pytest.mark.e2e

LEASE_S = 60.0
DISABLE_AFTER_S = 5 * 24 * 3600.0
RETRY_IN = timedelta(minutes=5)


@dataclass(frozen=True)
class Audited:
    """A client's configuration (token and signing secret included) and its deliveries,
    by name: `fresh` (pending, never tried), `retrying` (pending after a 503),
    `delivered` (a 200), `failed` (two 500s); created in that order, newest first."""

    config: dict[str, Any]
    auth: dict[str, str]
    ids: dict[str, str]

    @property
    def newest_first(self) -> list[str]:
        return [self.ids[name] for name in ("fresh", "retrying", "delivered", "failed")]


async def _attempt(db: Database, delivery_id: str, status_code: int, status: Status) -> None:
    """One attempt as the worker makes it: take the lease, then record the answer and
    the delivery's new status in one transaction (`core.lifecycle`)."""
    await make_due(db, delivery_id)
    [claim] = await lifecycle.claim(db, [delivery_id], lease_s=LEASE_S)
    ok = 200 <= status_code < 300
    attempt = AttemptRecord(
        started_at=utcnow(),
        duration_ms=42,
        status_code=status_code,
        error=None if ok else "http_status",
        response_body="thanks" if ok else "try later",
    )
    result = Result(
        claim=claim,
        attempt=attempt,
        status=status,
        next_attempt_at=utcnow() + RETRY_IN if status == Status.PENDING else None,
        health=Health.OK if ok else Health.FAILING,
    )
    await lifecycle.record(db, [result], disable_after_s=DISABLE_AFTER_S)


async def _audited(api: httpx.AsyncClient, db: Database, client: dict[str, str]) -> Audited:
    auth = {"Authorization": client["Authorization"]}
    config = {**await create_config(api, auth), "client_id": client["id"]}
    now = utcnow()
    ids = {
        name: await new_delivery(db, config, created_at=now - timedelta(minutes=minutes))
        for minutes, name in enumerate(("fresh", "retrying", "delivered", "failed"), start=1)
    }
    await _attempt(db, ids["retrying"], 503, Status.PENDING)
    await _attempt(db, ids["delivered"], 200, Status.DELIVERED)
    await _attempt(db, ids["failed"], 500, Status.PENDING)
    await _attempt(db, ids["failed"], 500, Status.FAILED)
    return Audited(config=config, auth=auth, ids=ids)


@pytest.fixture
def db(app: Starlette) -> Database:
    database: Database = app.state.db
    return database


@pytest.fixture
async def audited(api: httpx.AsyncClient, db: Database, new_client: NewClient) -> Audited:
    return await _audited(api, db, await new_client())


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    """The environment of a `webhooks` process on the test's database."""
    return process_env(DATABASE_URL=database_url)


def _base(audited: Audited) -> str:
    return f"{CONFIGS}/{audited.config['id']}/deliveries"


async def _api_items(api: httpx.AsyncClient, audited: Audited, **params: str) -> Any:
    response = await api.get(_base(audited), params=params, headers=audited.auth)
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return response.json()["items"]


async def _api_detail(api: httpx.AsyncClient, audited: Audited, delivery_id: str) -> Any:
    response = await api.get(f"{_base(audited)}/{delivery_id}", headers=audited.auth)
    assert response.status_code == 200, response.text
    return response.json()


def _cli_json(*args: str, env: dict[str, str]) -> Any:
    return json.loads(webhooks_ok(*args, "--json", env=env))


# --- list -------------------------------------------------------------------------------


async def test_list_json_is_the_apis_items(
    api: httpx.AsyncClient, audited: Audited, env: dict[str, str]
) -> None:
    listed = _cli_json("deliveries", "list", "--config", audited.config["id"], env=env)

    assert listed == await _api_items(api, audited)
    assert [item["id"] for item in listed] == audited.newest_first


@pytest.mark.parametrize(
    ("status", "names"),
    [("pending", ["fresh", "retrying"]), ("delivered", ["delivered"]), ("failed", ["failed"])],
)
async def test_list_filters_by_status(
    api: httpx.AsyncClient,
    audited: Audited,
    env: dict[str, str],
    status: str,
    names: list[str],
) -> None:
    config_id = audited.config["id"]

    listed = _cli_json("deliveries", "list", "--config", config_id, "--status", status, env=env)

    assert [item["id"] for item in listed] == [audited.ids[name] for name in names]
    assert listed == await _api_items(api, audited, status=status)


def test_list_names_each_delivery_and_its_status(audited: Audited, env: dict[str, str]) -> None:
    output = webhooks_ok("deliveries", "list", "--config", audited.config["id"], env=env)

    header, *rows = output.splitlines()
    assert header.split()[:3] == ["id", "event_type", "status"], header
    statuses = {"fresh": "pending", "retrying": "pending", "delivered": "delivered"}
    expected = [
        [delivery_id, "survey_created", statuses.get(name, "failed")]
        for name, delivery_id in audited.ids.items()
    ]
    assert [row.split()[:3] for row in rows] == expected, output


def test_an_empty_list_is_a_header_and_an_empty_array(
    audited: Audited, env: dict[str, str]
) -> None:
    config_id = audited.config["id"]

    as_json = _cli_json("deliveries", "list", "--config", config_id, "--status", "held", env=env)
    as_text = webhooks_ok("deliveries", "list", "--config", config_id, "--status", "held", env=env)

    assert as_json == []
    assert len(as_text.splitlines()) == 1 and as_text.split()[0] == "id", as_text


# --- show -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fresh", "retrying", "delivered", "failed"])
async def test_show_json_is_the_apis_detail_and_its_configuration(
    api: httpx.AsyncClient, audited: Audited, env: dict[str, str], name: str
) -> None:
    delivery_id = audited.ids[name]

    shown = _cli_json("deliveries", "show", delivery_id, env=env)

    # The one field the API leaves out: an operator starts from the delivery alone.
    assert shown == {
        **await _api_detail(api, audited, delivery_id),
        "config_id": audited.config["id"],
    }


def test_show_names_the_delivery_its_status_and_attempts(
    audited: Audited, env: dict[str, str]
) -> None:
    output = webhooks_ok("deliveries", "show", audited.ids["failed"], env=env)

    fields = dict(line.split(maxsplit=1) for line in output.splitlines()[:10] if line.strip())
    assert fields["id"] == audited.ids["failed"]
    assert fields["status"] == "failed"
    assert fields["attempt_count"] == "2"
    assert fields["config_id"] == audited.config["id"]
    attempts = output.split("\n\n", 1)[1].splitlines()
    assert attempts[0].split() == ["number", "started_at", "duration_ms", "status_code", "error"]
    assert [row.split()[:1] + row.split()[2:] for row in attempts[1:]] == [
        ["1", "42", "500", "http_status"],
        ["2", "42", "500", "http_status"],
    ], output


def test_show_without_attempts_says_so(audited: Audited, env: dict[str, str]) -> None:
    output = webhooks_ok("deliveries", "show", audited.ids["fresh"], env=env)

    assert "status           pending" in output
    assert output.rstrip().endswith("no attempts yet"), output


def test_an_upper_case_id_names_the_same_delivery(audited: Audited, env: dict[str, str]) -> None:
    """The API's routes take an id in any case; so does the command."""
    delivery_id = audited.ids["delivered"]

    shown = _cli_json("deliveries", "show", delivery_id.upper(), env=env)
    listed = _cli_json("deliveries", "list", "--config", audited.config["id"].upper(), env=env)

    assert shown["id"] == delivery_id
    assert [item["id"] for item in listed] == audited.newest_first


# --- what the command refuses -------------------------------------------------------------


@pytest.mark.usefixtures("audited")
def test_an_unknown_delivery_fails_clearly(env: dict[str, str]) -> None:
    unknown = str(uuid.uuid4())
    webhooks_fails("deliveries", "show", unknown, env=env, mentions=f"no delivery {unknown}")


@pytest.mark.usefixtures("audited")
def test_an_unknown_configuration_fails_clearly(env: dict[str, str]) -> None:
    unknown = str(uuid.uuid4())
    webhooks_fails(
        "deliveries", "list", "--config", unknown, env=env, mentions=f"no configuration {unknown}"
    )


@pytest.mark.parametrize("malformed", ["not-a-uuid", "1' OR '1'='1", ""])
def test_a_malformed_id_fails_clearly(sqlite_url: str, malformed: str) -> None:
    """Refused before the database is opened, so one backend tells."""
    env = process_env(DATABASE_URL=sqlite_url)
    webhooks_fails("deliveries", "show", malformed, env=env, mentions="not a delivery id")
    webhooks_fails(
        "deliveries", "list", "--config", malformed, env=env, mentions="not a configuration id"
    )


# --- what the command shows and to whom --------------------------------------------------


async def test_the_output_never_contains_the_token_or_the_signing_secret(
    api: httpx.AsyncClient, audited: Audited, env: dict[str, str]
) -> None:
    secret = (
        await api.get(f"{CONFIGS}/{audited.config['id']}/secret", headers=audited.auth)
    ).json()
    config_id = audited.config["id"]
    # The deliveries with attempts: the receivers' answers are on record there.
    attempted = (audited.ids["delivered"], audited.ids["failed"])
    runs = [
        ("deliveries", "list", "--config", config_id),
        ("deliveries", "list", "--config", config_id, "--json"),
        *(("deliveries", "show", delivery_id) for delivery_id in attempted),
        *(("deliveries", "show", delivery_id, "--json") for delivery_id in attempted),
    ]

    outputs = [webhooks_ok(*args, env=env) for args in runs]

    for output in outputs:
        for secret_value in (
            audited.config["authorization_token"],
            audited.config["signing_secret"],
            secret["signing_secret"],
        ):
            assert secret_value not in output
        assert "whsec_" not in output


async def test_every_clients_deliveries_are_audited_by_configuration(
    api: httpx.AsyncClient,
    db: Database,
    audited: Audited,
    new_client: NewClient,
    env: dict[str, str],
) -> None:
    """No API key, no client scope: an operator sees any client's deliveries, each
    configuration's apart from the others'."""
    other = await _audited(api, db, await new_client())

    mine = _cli_json("deliveries", "list", "--config", audited.config["id"], env=env)
    theirs = _cli_json("deliveries", "list", "--config", other.config["id"], env=env)
    shown = _cli_json("deliveries", "show", other.ids["failed"], env=env)

    assert [item["id"] for item in mine] == audited.newest_first
    assert [item["id"] for item in theirs] == other.newest_first
    assert theirs == await _api_items(api, other)
    assert shown["config_id"] == other.config["id"]


async def test_a_deleted_configurations_deliveries_stay_audited(
    api: httpx.AsyncClient, audited: Audited, env: dict[str, str]
) -> None:
    """The API forgets a deleted configuration (404); its deliveries stay in the database
    until pruned, and the operator can still see what became of them."""
    deleted = await api.delete(f"{CONFIGS}/{audited.config['id']}", headers=audited.auth)
    assert deleted.status_code == 200, deleted.text

    listed = _cli_json("deliveries", "list", "--config", audited.config["id"], env=env)

    statuses = [item["status"] for item in listed]
    assert [item["id"] for item in listed] == audited.newest_first
    assert statuses == ["cancelled", "cancelled", "delivered", "failed"]
