"""Assembles the Starlette application; nothing else lives here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount

from core.database import Database, open_database
from core.settings import Settings, get_settings
from outbox.wakeup import LocalWakeup, RedisWakeup, Wakeup
from service.auth import BearerAuth
from service.errors import EXCEPTION_HANDLERS
from service.openapi import openapi_document
from service.portal import pages
from service.portal.routes import routes as portal_routes
from service.routes import (
    configs,
    deliveries,
    event_types,
    health,
    metrics,
    patients,
    portal_sessions,
    surveys,
)
from service.routing import ApiRoute, Operation
from service.schemas import OpenApiDocument
from service.tracing import RequestSpans

API_PREFIX = "/api/v2"
OPENAPI_PATH = "/openapi.json"
BrokerCheck = Callable[[], Awaitable[str]]
Companion = Callable[[Starlette], AbstractAsyncContextManager[None]]
Enqueue = Callable[[list[str]], Awaitable[None]]


async def _sweep_will_send(delivery_ids: list[str]) -> None:
    """Without a broker, the poller's sweep sends due deliveries."""


def _api_routes() -> list[BaseRoute]:
    return [
        *configs.routes,
        *deliveries.routes,
        *surveys.routes,
        *patients.routes,
        *event_types.routes,
        *portal_sessions.routes,
    ]


def _api_mount() -> Mount:
    """`/api/v2`: the operations, behind bearer auth, and their OpenAPI document (made
    on first request, from the routes themselves)."""
    document: dict[str, Any] = {}

    async def openapi(request: Request) -> JSONResponse:
        if not document:
            document.update(openapi_document([api, *health.routes, *metrics.routes]))
        return JSONResponse(document)

    describe = Operation("This OpenAPI document", "operations", {200: OpenApiDocument}, auth=False)
    api = Mount(
        API_PREFIX,
        routes=[ApiRoute(OPENAPI_PATH, openapi, method="GET", operation=describe), *_api_routes()],
        middleware=[Middleware(BearerAuth, public_paths=frozenset({API_PREFIX + OPENAPI_PATH}))],
    )
    return api


def _lifespan(db: Database, wakeup: Wakeup, companions: Sequence[Companion]) -> Companion:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await db.connect()
        try:
            async with AsyncExitStack() as stack:
                for companion in companions:
                    await stack.enter_async_context(companion(app))
                yield
        finally:
            await wakeup.close()
            await db.disconnect()

    return lifespan


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    broker_check: BrokerCheck | None = None,
    wakeup: Wakeup | None = None,
    enqueue: Enqueue = _sweep_will_send,
    companions: Sequence[Companion] = (),
) -> Starlette:
    """The API. It connects `database` (or one opened from `settings`) on start-up and
    disconnects it on shutdown; it does not migrate (the CLI does, before serving).
    `wakeup` is nudged after each commit that writes an event; `enqueue` queues
    deliveries that the API makes due (redeliver, recover, ping); `companions` run beside
    the app for its lifetime (the poller and worker of `webhooks serve`)."""
    settings = settings or get_settings()
    db = database or open_database(settings.database_url)
    if wakeup is None:
        wakeup = RedisWakeup(settings.redis_url) if settings.redis_url else LocalWakeup()
    app = Starlette(
        # The portal's pages first: `/api/v2/docs` is a page, not an operation of `api`.
        routes=[*health.routes, *metrics.routes, *portal_routes, _api_mount()],
        exception_handlers={**EXCEPTION_HANDLERS, **pages.EXCEPTION_HANDLERS},
        lifespan=_lifespan(db, wakeup, companions),
        middleware=[Middleware(RequestSpans)],
    )
    app.state.settings = settings
    app.state.db = db
    app.state.broker_check = broker_check
    app.state.wakeup = wakeup
    app.state.enqueue = enqueue
    return app
