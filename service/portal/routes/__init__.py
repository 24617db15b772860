"""The portal's routes, one module per resource, and the static files."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from service.portal.pages import STATIC_DIR
from service.portal.routes import configs, deliveries, docs, event_types, home

routes: list[BaseRoute] = [
    *home.routes,
    *docs.routes,
    Mount(
        "/portal",
        routes=[
            *home.portal_routes,
            *configs.routes,
            *deliveries.routes,
            *event_types.routes,
            *home.fallback,
        ],
    ),
    Mount("/static/swagger-ui", app=docs.SwaggerAssets()),
    Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
]
