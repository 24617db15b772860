"""`/config/webhook/{id}/deliveries`, `/recover` and `/ping`: the audit (SPEC 8)."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from core import lifecycle
from core.lifecycle import Status
from service import deliveries
from service.bodies import validated
from service.errors import Conflict, NotFound, ValidationFailed
from service.routes.configs import owned_config
from service.routing import ApiRoute, Operation
from service.schemas import (
    Accepted,
    DeliveryDetail,
    DeliveryItem,
    DeliveryPage,
    DeliveryQuery,
    PingSent,
    Recovered,
    RecoverRequest,
)

TAG = "deliveries"
_BASE = "/config/webhook/{config_id:id}"


def _query(request: Request) -> DeliveryQuery:
    try:
        return DeliveryQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise ValidationFailed.from_pydantic(exc) from None


async def _enqueue(request: Request, delivery_ids: list[str]) -> None:
    await request.app.state.enqueue(delivery_ids)


async def list_deliveries(request: Request) -> JSONResponse:
    config = await owned_config(request)
    query = _query(request)
    filters = deliveries.Filters(
        status=query.status, event_type=query.event_type, since=query.since, until=query.until
    )
    try:
        items, next_cursor = await deliveries.list_deliveries(
            request.app.state.db, config["id"], filters, limit=query.limit, cursor=query.cursor
        )
    except deliveries.BadCursor:
        raise ValidationFailed(
            "request validation failed",
            details=[{"field": "cursor", "message": "not a cursor this service made"}],
        ) from None
    page = DeliveryPage(
        items=[DeliveryItem.model_validate(item) for item in items], next_cursor=next_cursor
    )
    return JSONResponse(page.model_dump(mode="json"))


async def get_delivery(request: Request) -> JSONResponse:
    config = await owned_config(request)
    item = await deliveries.get_delivery(
        request.app.state.db, config["id"], request.path_params["delivery_id"]
    )
    if item is None:
        raise NotFound("no such delivery")
    return JSONResponse(DeliveryDetail.model_validate(item).model_dump(mode="json"))


async def redeliver(request: Request) -> JSONResponse:
    config = await owned_config(request)
    delivery_id = request.path_params["delivery_id"]
    if not await lifecycle.redeliver(request.app.state.db, config["id"], delivery_id):
        found = await deliveries.get_delivery(request.app.state.db, config["id"], delivery_id)
        if found is None:
            raise NotFound("no such delivery")
        raise Conflict(deliveries.NOT_REDELIVERABLE[found["status"]])
    await _enqueue(request, [delivery_id])
    return JSONResponse({"delivery_id": delivery_id, "status": Status.PENDING}, status_code=202)


async def recover(request: Request) -> JSONResponse:
    config = await owned_config(request)
    body = await validated(request, RecoverRequest)
    ids = await lifecycle.recover(
        request.app.state.db, config["id"], since=body.since, until=body.until
    )
    await _enqueue(request, ids)
    return JSONResponse({"redelivered": len(ids)}, status_code=202)


async def ping(request: Request) -> JSONResponse:
    config = await owned_config(request)
    delivery_id = await deliveries.create_ping(request.app.state.db, config)
    await _enqueue(request, [delivery_id])
    return JSONResponse({"delivery_id": delivery_id}, status_code=202)


routes = [
    ApiRoute(
        _BASE + "/deliveries",
        list_deliveries,
        method="GET",
        operation=Operation(
            "The configuration's deliveries, newest first",
            TAG,
            {200: DeliveryPage},
            query=DeliveryQuery,
            errors=(404, 422),
        ),
    ),
    ApiRoute(
        _BASE + "/deliveries/{delivery_id:id}",
        get_delivery,
        method="GET",
        operation=Operation(
            "One delivery with its attempts", TAG, {200: DeliveryDetail}, errors=(404,)
        ),
    ),
    ApiRoute(
        _BASE + "/deliveries/{delivery_id:id}/redeliver",
        redeliver,
        method="POST",
        operation=Operation("Send a delivery again", TAG, {202: Accepted}, errors=(404, 409)),
    ),
    ApiRoute(
        _BASE + "/recover",
        recover,
        method="POST",
        operation=Operation(
            "Send again the failed deliveries of a time window",
            TAG,
            {202: Recovered},
            RecoverRequest,
            errors=(404,),
        ),
    ),
    ApiRoute(
        _BASE + "/ping",
        ping,
        method="POST",
        operation=Operation("Send a ping event", TAG, {202: PingSent}, errors=(404,)),
    ),
]
