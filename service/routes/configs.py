"""`/config/webhook`: the seed document's operations on configurations (SPEC 5, 6)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from core import configs
from core.signing_keys import shown_key
from core.targets import BLOCKED_TARGET_MESSAGE, url_is_blocked
from service.auth import client_id
from service.bodies import validated
from service.errors import NotFound, ValidationFailed
from service.routing import ApiRoute, Operation
from service.schemas import (
    Config,
    ConfigCreate,
    ConfigList,
    ConfigUpdate,
    SigningKey,
    config_view,
)

TAG = "configurations"


async def _check_target(request: Request, url: str) -> None:
    allow = request.app.state.settings.allow_private_targets
    if await url_is_blocked(url, allow_private_targets=allow):
        raise ValidationFailed(
            "request validation failed",
            details=[{"field": "url", "message": BLOCKED_TARGET_MESSAGE}],
        )


async def owned_config(request: Request) -> dict[str, Any]:
    """The configuration `{config_id}` of the authenticated client, or a 404."""
    row = await configs.get_config(
        request.app.state.db, client_id(request), request.path_params["config_id"]
    )
    if row is None:
        raise NotFound("no such webhook configuration")
    return row


async def create_config(request: Request) -> JSONResponse:
    body = await validated(request, ConfigCreate)
    await _check_target(request, body.url)
    row = await configs.create_config(
        request.app.state.db,
        client_id(request),
        url=body.url,
        subscribed_events=body.subscribed_events,
        authorization_token=body.authorization_token,
        signature_scheme=body.signature_scheme,
        controls=body.controls(),
    )
    return JSONResponse(config_view(row, with_token=True, with_secret=True), status_code=201)


async def list_configs(request: Request) -> JSONResponse:
    rows = await configs.list_configs(request.app.state.db, client_id(request))
    return JSONResponse([config_view(row) for row in rows])


async def get_config(request: Request) -> JSONResponse:
    return JSONResponse(config_view(await owned_config(request)))


async def update_config(request: Request) -> JSONResponse:
    body = await validated(request, ConfigUpdate)
    changes = body.changes()
    if not changes:
        raise ValidationFailed(
            "request validation failed",
            details=[{"field": "body", "message": "at least one field is required"}],
        )
    if body.url is not None:
        await _check_target(request, body.url)
    config = await owned_config(request)
    row, released = await configs.update_config(
        request.app.state.db, client_id(request), config["id"], changes
    )
    if row is None:
        raise NotFound("no such webhook configuration")
    if released:
        await request.app.state.enqueue(released)
    # A switched scheme has a new key that the client needs (its public key, for v1a).
    switched = row["signing_secret"] != config["signing_secret"]
    view = config_view(row, with_token=body.authorization_token is not None, with_secret=switched)
    return JSONResponse(view)


async def delete_config(request: Request) -> JSONResponse:
    row = await configs.delete_config(
        request.app.state.db, client_id(request), request.path_params["config_id"]
    )
    if row is None:
        raise NotFound("no such webhook configuration")
    return JSONResponse(config_view(row))


async def get_secret(request: Request) -> JSONResponse:
    row = await owned_config(request)
    return JSONResponse(shown_key(row["signing_secret"]))


async def rotate_secret(request: Request) -> JSONResponse:
    secret = await configs.rotate_secret(
        request.app.state.db, client_id(request), request.path_params["config_id"]
    )
    if secret is None:
        raise NotFound("no such webhook configuration")
    return JSONResponse(shown_key(secret))


_ONE = "/config/webhook/{config_id:id}"

routes = [
    ApiRoute(
        "/config/webhook",
        create_config,
        method="POST",
        operation=Operation("Register a webhook configuration", TAG, {201: Config}, ConfigCreate),
    ),
    ApiRoute(
        "/config/webhook",
        list_configs,
        method="GET",
        operation=Operation(
            "List the client's configurations, tokens excluded", TAG, {200: ConfigList}
        ),
    ),
    ApiRoute(
        _ONE,
        get_config,
        method="GET",
        operation=Operation("One configuration, token excluded", TAG, {200: Config}, errors=(404,)),
    ),
    ApiRoute(
        _ONE,
        update_config,
        method="PATCH",
        operation=Operation(
            "Update a configuration; the token is returned only when it was changed",
            TAG,
            {200: Config},
            ConfigUpdate,
            errors=(404,),
        ),
    ),
    ApiRoute(
        _ONE,
        delete_config,
        method="DELETE",
        operation=Operation(
            "Delete a configuration and cancel its pending deliveries",
            TAG,
            {200: Config},
            errors=(404,),
        ),
    ),
    ApiRoute(
        _ONE + "/secret",
        get_secret,
        method="GET",
        operation=Operation(
            "The signing secret (v1), or the public key (v1a)",
            TAG,
            {200: SigningKey},
            errors=(404,),
        ),
    ),
    ApiRoute(
        _ONE + "/secret/rotate",
        rotate_secret,
        method="POST",
        operation=Operation(
            "Rotate the signing key; the old one signs too for 24 hours",
            TAG,
            {200: SigningKey},
            errors=(404,),
        ),
    ),
]
