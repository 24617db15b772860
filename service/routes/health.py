"""`/healthz` and `/readyz` (SPEC 10): no auth, JSON either way."""

from __future__ import annotations

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse

from core.database import fetch_one
from service.routing import ApiRoute, Operation
from service.schemas import Health

_PING = sa.select(sa.literal(1).label("one"))


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    checks = {"database": "ok"}
    try:
        await fetch_one(request.app.state.db, _PING)
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    broker_check = request.app.state.broker_check
    if broker_check is not None:
        checks["broker"] = await broker_check()
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


routes = [
    ApiRoute(
        "/healthz",
        healthz,
        method="GET",
        operation=Operation("The process is running", "operations", {200: Health}, auth=False),
    ),
    ApiRoute(
        "/readyz",
        readyz,
        method="GET",
        operation=Operation(
            "The database and the broker answer",
            "operations",
            {200: Health, 503: Health},
            auth=False,
        ),
    ),
]
