"""Portal sessions in requests: the signing key, the session cookie, and the checks that
every page and form action makes (a live session; on POST, its CSRF token)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from urllib.parse import parse_qs

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from core.clock import utcnow
from core.settings import Settings
from service.bodies import read_body
from service.portal import data
from service.portal.links import Link, cookie_hash, csrf_ok, csrf_token, sign_link
from service.portal.pages import BadForm, CsrfRefused, SessionRequired

COOKIE_NAME = "webhooks_portal"
CSRF_FIELD = "csrf_token"
LOGIN_PATH = "/portal/login"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 200

Form = dict[str, list[str]]
FieldErrors = dict[str, str]


async def portal_key(request: Request) -> bytes:
    """The key that signs links and CSRF tokens, read once per process."""
    state = request.app.state
    key: bytes | None = getattr(state, "portal_key", None)
    if key is None:
        key = await data.portal_key(state.db, state.settings)
        state.portal_key = key
    return key


async def new_link(
    request: Request, client_id: str, config_id: str | None, *, ttl_s: int
) -> tuple[str, datetime]:
    """An absolute magic link (from `WEBHOOKS_PUBLIC_URL`, else from the request) and
    the moment it and its session expire."""
    expires_at = (utcnow() + timedelta(seconds=ttl_s)).replace(microsecond=0)
    link = Link(str(uuid.uuid4()), client_id, config_id, int(expires_at.timestamp()))
    token = sign_link(await portal_key(request), link)
    settings: Settings = request.app.state.settings
    base = settings.public_url or str(request.base_url).rstrip("/")
    return f"{base}{LOGIN_PATH}?token={token}", expires_at


def is_secure(request: Request) -> bool:
    """Behind https: the request came over it (or a trusted proxy said so), or the
    service's public URL is https."""
    public_url = request.app.state.settings.public_url or ""
    return request.url.scheme == "https" or public_url.startswith("https://")


def set_cookie(request: Request, response: Response, value: str, expires_at: datetime) -> None:
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=max(0, int((expires_at - utcnow()).total_seconds())),
        expires=expires_at,
        path="/",
        secure=is_secure(request),
        httponly=True,
        samesite="lax",
    )


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE_NAME, path="/", secure=is_secure(request), httponly=True, samesite="lax"
    )


async def signed_in(request: Request) -> data.Scoped | None:
    """The request's live session as a data view, or None; kept on `request.state`
    for the templates (`portal_session`, `csrf`)."""
    value = request.cookies.get(COOKIE_NAME)
    if not value:
        return None
    state = request.app.state
    session = await data.find_session(state.db, cookie_hash(value), now=utcnow())
    if session is None:
        return None
    request.state.portal_session = session
    request.state.csrf = csrf_token(await portal_key(request), session.id)
    return data.Scoped(state.db, session, enqueue=state.enqueue)


async def scoped(request: Request) -> data.Scoped:
    """The live session's data view; a 401 page without one."""
    view = await signed_in(request)
    if view is None:
        raise SessionRequired(
            "Your portal session has ended, or this browser has none. Ask the platform "
            "for a new portal link."
        )
    return view


async def posted_form(request: Request, view: data.Scoped) -> Form:
    """The urlencoded form of a POST, refused (403) without the session's CSRF token."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    form: Form = {}
    if media_type == FORM_TYPE:
        try:
            form = parse_qs((await read_body(request)).decode(), max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise BadForm("The form could not be read.") from None
    token = form.get(CSRF_FIELD, [None])[0]
    if not csrf_ok(await portal_key(request), view.session.id, token):
        raise CsrfRefused(
            "The form was missing its security token, or it belongs to another session. "
            "Reload the page and try again."
        )
    return form


def field_errors(exc: ValidationError) -> FieldErrors:
    """One message per field of a form, as the API's validation words it."""
    errors: FieldErrors = {}
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        field = str(error["loc"][0]) if error["loc"] else "form"
        errors.setdefault(field, error["msg"])
    return errors
