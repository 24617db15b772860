"""`GET /`, the magic link's landing (`/portal/login`), and signing out."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from core.clock import utcnow
from service.portal import data
from service.portal.links import BadLink, new_cookie, read_link
from service.portal.pages import LinkRefused, PageNotFound, redirect, render
from service.portal.sessions import (
    clear_cookie,
    portal_key,
    posted_form,
    scoped,
    set_cookie,
    signed_in,
)
from service.routing import PageRoute

_REFUSED = (
    "This portal link has been used already, has expired, or is not valid. Each link "
    "opens the portal once: ask the platform for a new one."
)


async def home(request: Request) -> Response:
    """The portal for a browser with a live session, else a short page about the API."""
    if await signed_in(request) is not None:
        return redirect(request, "/portal/")
    return render(request, "home.html")


async def login(request: Request) -> Response:
    """Open a session from a magic link: the cookie, then `303` to the portal."""
    token = request.query_params.get("token", "")
    now = utcnow()
    try:
        link = read_link(await portal_key(request), token, now_s=now.timestamp())
    except BadLink:
        raise LinkRefused(_REFUSED) from None
    cookie, hashed = new_cookie()
    session = await data.open_session(request.app.state.db, link, hashed, now=now)
    if session is None:
        raise LinkRefused(_REFUSED)
    response = redirect(request, "/portal/")
    set_cookie(request, response, cookie, session.expires_at)
    return response


async def logout(request: Request) -> Response:
    view = await scoped(request)
    await posted_form(request, view)
    await data.end_session(request.app.state.db, view.session.id, now=utcnow())
    response = redirect(request, "/")
    clear_cookie(request, response)
    return response


async def not_found(request: Request) -> Response:
    raise PageNotFound("There is no such page in the portal.")


routes = [PageRoute("/", home)]
portal_routes = [
    PageRoute("/login", login),
    PageRoute("/logout", logout, method="POST"),
]
# Last in the portal's mount: its unknown paths get a page, not the API's JSON.
fallback = [PageRoute("/{path:path}", not_found, method="GET")]
