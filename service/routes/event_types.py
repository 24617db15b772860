"""`/event-types`: the catalogue of events a configuration may subscribe to."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from core.events import catalogue
from service.routing import ApiRoute, Operation
from service.schemas import EventTypeList


async def list_event_types(request: Request) -> JSONResponse:
    return JSONResponse(catalogue())


routes = [
    ApiRoute(
        "/event-types",
        list_event_types,
        method="GET",
        operation=Operation(
            "The event types and the JSON Schema of their content", "events", {200: EventTypeList}
        ),
    ),
]
