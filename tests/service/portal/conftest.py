"""The app in-process with a recording `enqueue`, API clients, and browsers: HTTP clients
of the app that keep cookies, one per portal session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from starlette.applications import Starlette

from core.database import Database
from core.settings import Settings
from service.app import create_app
from tests.conftest import NewClient
from tests.service.support import Enqueued

Browsers = Callable[[], Awaitable[httpx.AsyncClient]]


@pytest.fixture
def enqueued() -> Enqueued:
    return Enqueued()


@pytest.fixture
async def app(settings: Settings, enqueued: Enqueued) -> AsyncIterator[Starlette]:
    application = create_app(settings, enqueue=enqueued)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def db(app: Starlette) -> Database:
    database: Database = app.state.db
    return database


@pytest.fixture
async def client(new_client: NewClient) -> dict[str, str]:
    """An API client: `Authorization` and `id`."""
    return await new_client()


@pytest.fixture
async def browsers(app: Starlette) -> AsyncIterator[Browsers]:
    """Makes HTTP clients of the app that keep cookies, as separate browsers would."""
    opened: list[httpx.AsyncClient] = []

    async def make() -> httpx.AsyncClient:
        browser = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        opened.append(browser)
        return browser

    yield make
    for browser in opened:
        await browser.aclose()


@pytest.fixture
async def browser(browsers: Browsers) -> httpx.AsyncClient:
    return await browsers()
