"""`/portal/sessions`: magic links into the client portal (SPEC 12)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from service.auth import client_id
from service.bodies import validated
from service.errors import NotFound
from service.portal import data
from service.portal.sessions import new_link
from service.routing import ApiRoute, Operation
from service.schemas import PortalSession, PortalSessionCreate


async def create_session(request: Request) -> JSONResponse:
    body = await validated(request, PortalSessionCreate)
    owner, db = client_id(request), request.app.state.db
    config_id = body.config_id
    if config_id is not None and await data.client_config(db, owner, config_id) is None:
        raise NotFound("no such webhook configuration")
    url, expires_at = await new_link(request, owner, config_id, ttl_s=body.ttl_s)
    session = PortalSession(url=url, expires_at=expires_at)
    return JSONResponse(session.model_dump(mode="json"), status_code=201)


routes = [
    ApiRoute(
        "/portal/sessions",
        create_session,
        method="POST",
        operation=Operation(
            "A single-use link that opens the client portal, for the client or one of its "
            "configurations",
            "portal",
            {201: PortalSession},
            PortalSessionCreate,
            errors=(404,),
        ),
    ),
]
