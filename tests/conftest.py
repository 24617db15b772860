"""Fixtures: both databases, a private Redis, the app in-process, API clients; a frozen
clock and a fake DNS."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from core.clients import create_client
from core.database import Database, open_database
from core.migrate import upgrade
from core.settings import Settings
from service.app import create_app
from tests.outbox.helpers import connected, isolated_database_url
from tests.servers import RedisServer, postgres_database, redis_server

BACKENDS = ["sqlite", "postgresql"]


# Tools a test may run without being end-to-end: they set up a database, not the service.
SETUP_TOOLS = frozenset({"psql"})
# A browser counts as a process too: Chromium, chromedriver, or Playwright's driver (a
# `node` it ships), which starts Chromium (tests/e2e/browser.py).
BROWSER_PROGRAMS = frozenset({"chromium", "chromedriver", "node"})


@pytest.fixture(autouse=True)
def _processes_only_in_e2e(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that starts a process (of ours, or a server) must be marked `e2e`, so that
    `-m "not e2e"` is a quick in-process run; this fails one that is not."""
    if request.node.get_closest_marker("e2e") is not None:
        return
    real_init = subprocess.Popen.__init__

    def guarded(self: subprocess.Popen[Any], args: Any, *rest: Any, **options: Any) -> None:
        program = Path(str(args[0] if isinstance(args, list | tuple) else args).split()[0])
        if program.name not in SETUP_TOOLS:
            what = (
                f"a browser ({program.name})" if program.name in BROWSER_PROGRAMS else program.name
            )
            pytest.fail(f"{request.node.nodeid} starts {what}: mark it e2e")
        real_init(self, args, *rest, **options)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "webhooks.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    with postgres_database() as url:
        upgrade(url)
        yield url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of a migrated database of each backend, shared by the test session."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def fresh_sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database of this test alone."""
    url = f"sqlite:///{tmp_path / 'webhooks.db'}"
    upgrade(url)
    return url


@pytest.fixture
def isolated_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of this test alone, of each backend: for tests that
    assert on every row of a table (migrated here, outside the event loop)."""
    with isolated_database_url(database_url, tmp_path) as url:
        yield url


@pytest.fixture
def pg_url(postgresql_url: str, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty PostgreSQL database of this test alone."""
    with isolated_database_url(postgresql_url, tmp_path) as url:
        yield url


@pytest.fixture
async def idb(isolated_url: str) -> AsyncIterator[Database]:
    """A connection to `isolated_url`."""
    database = await connected(isolated_url)
    yield database
    await database.disconnect()


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test alone, which it may stop and start again."""
    with redis_server() as server:
        yield server


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "DATABASE_URL": database_url,
        "WEBHOOKS_ALLOW_PRIVATE_TARGETS": True,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = open_database(database_url)
    await database.connect()
    yield database
    await database.disconnect()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def api(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app, in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


NewClient = Callable[[], Awaitable[dict[str, str]]]


@pytest.fixture
def new_client(app: Starlette) -> NewClient:
    """Makes an API client; returns its `Authorization` header (and id under `id`)."""

    async def make() -> dict[str, str]:
        created = await create_client(app.state.db, "test client")
        return {"Authorization": f"Bearer {created['api_key']}", "id": created["id"]}

    return make


@pytest.fixture
async def auth(new_client: NewClient) -> dict[str, str]:
    headers = await new_client()
    headers.pop("id")
    return headers


def metric_families(text: str) -> dict[str, Any]:
    """{family name: family} of a Prometheus exposition, failing on a family exposed
    twice (an invalid exposition)."""
    found: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in found, f"{family.name} is exposed twice:\n{text}"
        found[family.name] = family
    return found


# -- time and names ----------------------------------------------------------------------

CLOCK_START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock_start() -> datetime:
    """Where `clock` starts: `CLOCK_START`, unless a module overrides this fixture."""
    return CLOCK_START


@pytest.fixture
def clock(clock_start: datetime) -> Iterator[FrozenDateTimeFactory]:
    """Wall-clock time frozen at `clock_start`, for the test to move; asyncio's own
    clock runs on (`real_asyncio`), so that timeouts and sleeps still work."""
    with freeze_time(clock_start, real_asyncio=True) as frozen:
        assert isinstance(frozen, FrozenDateTimeFactory)
        yield frozen


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A table of names to addresses, empty at first, that `socket.getaddrinfo` answers
    from without asking a DNS server: a name in it resolves to its addresses (port,
    family and type as asked), or not at all if it has none; every other name resolves
    as usual."""
    table: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in table:
            return real(host, port, *args, **kwargs)
        found = []
        for address in table[host]:
            with contextlib.suppress(socket.gaierror):  # not of the family asked for
                found += real(address, port, *args, **kwargs)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return found

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table
