"""Rendering: the templates, their filters, the security headers of every page, and the
pages' errors.

PageError                 the root: an error that becomes an HTML page
 +-- BadForm              400, a form that cannot be read (not urlencoded)
 +-- SessionRequired      401, no live session (none, ended, expired, revoked client)
 +-- LinkRefused          401, a magic link that is used, expired or forged
 +-- CsrfRefused          403, a POST without the session's CSRF token
 +-- PageNotFound         404, what does not exist or is not the session's to see
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from core.clock import utcnow
from core.settings import Settings

PACKAGE = Path(__file__).parent
STATIC_DIR = PACKAGE / "static"
# Bodies longer than this many lines are shown folded.
FOLD_LINES = 24


class PageError(Exception):
    status_code = 400
    title = "Bad request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadForm(PageError):
    status_code, title = 400, "Bad request"


class SessionRequired(PageError):
    status_code, title = 401, "Sign-in required"


class LinkRefused(PageError):
    status_code, title = 401, "This link cannot be used"


class CsrfRefused(PageError):
    status_code, title = 403, "Request refused"


class PageNotFound(PageError):
    status_code, title = 404, "Not found"


def security_headers(settings: Settings) -> dict[str, str]:
    """Every page's: a CSP that allows no inline script or style and nothing from
    another host, framing only by `WEBHOOKS_PORTAL_FRAME_ANCESTORS`; no caching (the
    pages show a client's data); no referrer (a magic link is in a URL)."""
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            f"frame-ancestors {settings.portal_frame_ancestors}",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


# -- filters -------------------------------------------------------------------------


def relative(moment: datetime, now: datetime) -> str:
    """`just now`, `5 min ago`, `in 3 h`, `2 days ago`."""
    seconds = (moment - now).total_seconds()
    span = abs(seconds)
    if span < 45:
        return "just now"
    if span < 3600:
        text = f"{max(1, round(span / 60))} min"
    elif span < 86400:
        text = f"{round(span / 3600)} h"
    else:
        days = round(span / 86400)
        text = f"{days} day{'' if days == 1 else 's'}"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def absolute(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty_json(text: str) -> str:
    """A JSON text indented; anything else as it is."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def percent(rate: float | None) -> str:
    if rate is None:
        return "—"
    if rate in (0, 1):
        return f"{rate:.0%}".replace("%", " %")
    return f"{rate * 100:.1f} %"


def line_count(text: str | None) -> int:
    return 0 if not text else text.count("\n") + 1


def _version(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


_STATIC_VERSIONS = {path.name: _version(path) for path in STATIC_DIR.iterdir() if path.is_file()}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("service.portal", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(absolute=absolute, pretty_json=pretty_json, percent=percent)
    env.filters.update(line_count=line_count)
    env.globals.update(relative=relative, FOLD_LINES=FOLD_LINES)
    return env


def app_root(request: Request) -> str:
    """The path the service is served under (behind a proxy's prefix), whatever mount
    the request is routed through."""
    scope = request.scope
    return str(scope.get("app_root_path", scope.get("root_path", "")))


def _context(request: Request) -> dict[str, Any]:
    root = app_root(request)
    state = request.state

    def static(name: str) -> str:
        return f"{root}/static/{name}?v={_STATIC_VERSIONS.get(name, '0')}"

    path = request.url.path
    nav = "events" if "/event-types" in path else "endpoints" if "/portal" in path else None
    return {
        "root": root,
        "nav": nav,
        "static": static,
        "now": utcnow(),
        "session": getattr(state, "portal_session", None),
        "csrf": getattr(state, "csrf", None),
        "notice": None,
        "error": None,
    }


templates = Jinja2Templates(env=_environment())


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, *, status: int = 200
) -> Response:
    """The template `name` as an HTML page with the security headers."""
    settings: Settings = request.app.state.settings
    base = _context(request)
    base.update(context or {})
    return templates.TemplateResponse(
        request, name, base, status_code=status, headers=security_headers(settings)
    )


def redirect(request: Request, path: str) -> RedirectResponse:
    """`303 See Other` to `path` of this service (after a POST, or to a session)."""
    response = RedirectResponse(app_root(request) + path, status_code=303)
    response.headers.update(security_headers(request.app.state.settings))
    return response


async def page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    context = {"title": exc.title, "message": exc.message, "status": exc.status_code}
    return render(request, "error.html", context, status=exc.status_code)


EXCEPTION_HANDLERS = {PageError: page_error}
