"""`/metrics`: Prometheus text, no auth (bind or firewall it in production)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from core.clock import utcnow
from core.metrics import exposition
from service.routing import ApiRoute, Operation


async def metrics(request: Request) -> Response:
    body = await exposition(request.app.state.db, utcnow())
    return Response(body, media_type=CONTENT_TYPE_LATEST)


routes = [
    ApiRoute(
        "/metrics",
        metrics,
        method="GET",
        operation=Operation(
            "Prometheus metrics (text format)",
            "operations",
            {200: None},
            auth=False,
            text_response=True,
        ),
    ),
]
