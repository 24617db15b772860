"""Bearer authentication for everything under `/api/v2` (SPEC 3).

`BearerAuth` wraps the API's mount: an unauthenticated request gets a 401 before any
routing, so unknown paths under the API do not leak which routes exist.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from core.clients import authenticate
from service.errors import error_response

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


class BearerAuth:
    """Authenticates every request except those to `public_paths` (full paths)."""

    def __init__(
        self, app: ASGIApp, *, public_paths: frozenset[str] | set[str] = frozenset()
    ) -> None:
        self.app = app
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        token = _bearer_token(request.headers.get("authorization"))
        client_id = None
        if token is not None:
            client_id = await authenticate(request.app.state.db, token)
        if client_id is None:
            message = "missing or malformed bearer token" if token is None else "invalid API key"
            response = error_response(401, "unauthorized", message, headers=_CHALLENGE)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["client_id"] = client_id
        await self.app(scope, receive, send)


def client_id(request: Request) -> str:
    """The authenticated client of this request (set by `BearerAuth`)."""
    return str(request.state.client_id)
