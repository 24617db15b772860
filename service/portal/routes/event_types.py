"""`/portal/event-types`: the catalogue, each type with its JSON Schema and an example."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from core.events import PING_EVENT, catalogue, example_body
from service.portal.pages import render
from service.portal.sessions import scoped
from service.routing import PageRoute

PING_DESCRIPTION = (
    "Sent when you press Send ping on an endpoint's page (or call the API's ping), "
    "whatever the endpoint subscribes to. It cannot be subscribed to."
)


async def list_event_types(request: Request) -> Response:
    await scoped(request)
    types = [
        {
            "name": entry["name"],
            "description": entry["description"],
            "schema": json.dumps(entry["schema"], indent=2),
            "example": json.dumps(example_body(entry["name"]), indent=2),
        }
        for entry in catalogue()
    ]
    ping = {
        "name": PING_EVENT,
        "description": PING_DESCRIPTION,
        "schema": None,
        "example": json.dumps(example_body(PING_EVENT), indent=2),
    }
    return render(request, "event_types.html", {"types": types, "ping": ping})


routes = [PageRoute("/event-types", list_event_types)]
