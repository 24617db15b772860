"""`GET /api/v2/docs`: the interactive API reference, Swagger UI 5 (it renders OpenAPI
3.1) from the `swagger-ui-py` package's files, served here and started by our own
script file (`static/docs.js`): nothing inline, nothing from another host."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from service.portal.pages import render
from service.routing import PageRoute

DOCS_PATH = "/api/v2/docs"
OPENAPI_PATH = "/api/v2/openapi.json"
# The only files of the package that the page loads; the rest of it is not served.
SWAGGER_FILES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})


def swagger_dir() -> Path:
    """The package's `static` folder, found without importing it (its `__init__`
    imports web-framework handlers we do not use)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


class SwaggerAssets:
    """Serves `SWAGGER_FILES` from the package; anything else is a 404."""

    def __init__(self) -> None:
        self._files = StaticFiles(directory=swagger_dir())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, root = scope["path"], scope.get("root_path", "")
        name = path[len(root) :] if path.startswith(root) else path
        if name.lstrip("/") not in SWAGGER_FILES:
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        await self._files(scope, receive, send)


async def docs(request: Request) -> Response:
    return render(request, "docs.html", {"openapi_url": OPENAPI_PATH})


routes = [PageRoute(DOCS_PATH, docs)]
