"""`/portal/configs/{id}/deliveries` (the filtered, paged list) and `/portal/deliveries/{id}`
(one delivery: payload, headers, attempts, and `Redeliver`)."""

from __future__ import annotations

import base64
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from core.events import PING_EVENT, EventType
from core.lifecycle import REDELIVERABLE, Status
from service.deliveries import BadCursor, Filters
from service.portal.pages import PageNotFound, redirect, render
from service.portal.routes.configs import owned_config
from service.portal.sessions import field_errors, posted_form, scoped
from service.routing import PageRoute
from service.schemas import DeliveryQuery
from workers.signing import webhook_headers

PAGE_SIZE = 50
STATUSES = tuple(Status)
FILTERS = ("status", "event_type", "since", "until")
NOTICES = {
    "redelivered": "Queued: the delivery is being sent again.",
    "ping": "Ping queued: it is sent like any other delivery.",
}
HIDDEN_TOKEN = "(your endpoint's authorization token: not shown)"
HIDDEN_SIGNATURE = "v1,… (HMAC-SHA256 with your signing secret, made for each attempt)"
# The headers are made as the worker makes them, signed with this throwaway secret.
_PLACEHOLDER_SECRET = "whsec_" + base64.b64encode(bytes(32)).decode()


async def list_deliveries(request: Request) -> Response:
    view = await scoped(request)
    config = await owned_config(view, request)
    values = {name: request.query_params.get(name, "").strip() for name in FILTERS}
    cursor = request.query_params.get("cursor") or None
    context: dict[str, Any] = {
        "config": config,
        "values": values,
        "statuses": STATUSES,
        "event_types": [*(event.value for event in EventType), PING_EVENT],
        "items": [],
        "next_cursor": None,
        "cursor": cursor,
        "errors": {},
    }
    try:
        query = DeliveryQuery.model_validate(
            {**{k: v for k, v in values.items() if v}, "cursor": cursor, "limit": PAGE_SIZE}
        )
        filters = Filters(query.status, query.event_type, query.since, query.until)
        items, next_cursor = await view.deliveries(
            config, filters, limit=PAGE_SIZE, cursor=query.cursor
        )
    except ValidationError as exc:
        context["errors"] = field_errors(exc)
        return render(request, "deliveries.html", context, status=422)
    except BadCursor:
        context["errors"] = {"cursor": "This page link is not valid: start from the first page."}
        return render(request, "deliveries.html", context, status=422)
    context.update(items=items, next_cursor=next_cursor)
    return render(request, "deliveries.html", context)


def headers_sent(item: dict[str, Any]) -> list[tuple[str, str]]:
    """The request headers of the delivery's last attempt as the worker makes them, the
    token and the signature hidden."""
    attempts = item["attempts"]
    timestamp_s = int(attempts[-1]["started_at"].timestamp()) if attempts else None
    headers = webhook_headers(
        msg_id=item["id"],
        body=item["body"].encode(),
        token=HIDDEN_TOKEN,
        secrets=[_PLACEHOLDER_SECRET],
        timestamp_s=timestamp_s,
    )
    headers["webhook-signature"] = HIDDEN_SIGNATURE
    if timestamp_s is None:
        headers["webhook-timestamp"] = "(the time of each attempt, in Unix seconds)"
    return list(headers.items())


async def _delivery_page(
    request: Request, *, status: int = 200, error: str | None = None
) -> Response:
    view = await scoped(request)
    found = await view.delivery(request.path_params["delivery_id"])
    if found is None:
        raise PageNotFound("There is no such delivery, or it is not yours to see.")
    item, config = found
    context = {
        "item": item,
        "config": config,
        "headers": headers_sent(item),
        "redeliverable": item["status"] in REDELIVERABLE,
        "notice": NOTICES.get(request.query_params.get("notice", "")),
        "error": error,
    }
    return render(request, "delivery.html", context, status=status)


async def show_delivery(request: Request) -> Response:
    return await _delivery_page(request)


async def redeliver(request: Request) -> Response:
    view = await scoped(request)
    await posted_form(request, view)
    found = await view.delivery(request.path_params["delivery_id"])
    if found is None:
        raise PageNotFound("There is no such delivery, or it is not yours to see.")
    item, _ = found
    refusal = await view.redeliver(item)
    if refusal is not None:
        return await _delivery_page(request, status=409, error=refusal.capitalize() + ".")
    return redirect(request, f"/portal/deliveries/{item['id']}?notice=redelivered")


routes = [
    PageRoute("/configs/{config_id:id}/deliveries", list_deliveries),
    PageRoute("/deliveries/{delivery_id:id}", show_delivery),
    PageRoute("/deliveries/{delivery_id:id}/redeliver", redeliver, method="POST"),
]
