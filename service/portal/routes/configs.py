"""`/portal/` and `/portal/configs/{id}`: the session's configurations with their health;
one configuration with its chart and recent deliveries, and its forms (edit, enable or
disable, reveal or rotate the secret, ping, recover)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from core.clock import utcnow
from core.events import EventType
from core.signing_keys import shown_key
from core.targets import BLOCKED_TARGET_MESSAGE, url_is_blocked
from service.deliveries import Filters
from service.portal.chart import hourly_chart
from service.portal.data import HEALTH_WINDOW, Scoped
from service.portal.pages import PageNotFound, redirect, render
from service.portal.sessions import FieldErrors, Form, field_errors, posted_form, scoped
from service.routing import PageRoute
from service.schemas import ConfigUpdate, RecoverRequest

RECENT_DELIVERIES = 10
NOTICES = {
    "saved": "Endpoint saved.",
    "enabled": "Endpoint enabled: its held deliveries are being sent.",
    "disabled": "Endpoint disabled: new events are held until you enable it again.",
    "rotated": "Signing key rotated. The previous key keeps signing for 24 hours.",
}


async def owned_config(view: Scoped, request: Request) -> dict[str, Any]:
    """The configuration `{config_id}` of the session, or a 404 page."""
    config = await view.config(request.path_params["config_id"])
    if config is None:
        raise PageNotFound("There is no such endpoint, or it is not yours to see.")
    return config


def _first(form: Form, name: str) -> str:
    return form.get(name, [""])[0].strip()


async def list_configs(request: Request) -> Response:
    view = await scoped(request)
    now = utcnow()
    configs = await view.configs()
    health = await view.health([config["id"] for config in configs], now=now)
    return render(request, "configs.html", {"configs": configs, "health": health})


async def _config_page(
    request: Request, view: Scoped, config: dict[str, Any], *, status: int = 200, **extra: Any
) -> Response:
    now = utcnow()
    health = (await view.health([config["id"]], now=now))[config["id"]]
    chart = hourly_chart(await view.hourly(config, now=now))
    recent, _ = await view.deliveries(config, Filters(), limit=RECENT_DELIVERIES, cursor=None)
    context = {
        "config": config,
        "health": health,
        "chart": chart,
        "recent": recent,
        "event_types": [event.value for event in EventType],
        "notice": NOTICES.get(request.query_params.get("notice", "")),
        "errors": {},
        "values": {"url": config["url"], "subscribed_events": config["subscribed_events"]},
        "secret": None,
        **extra,
    }
    return render(request, "config.html", context, status=status)


async def show_config(request: Request) -> Response:
    view = await scoped(request)
    return await _config_page(request, view, await owned_config(view, request))


async def edit_config(request: Request) -> Response:
    view = await scoped(request)
    form = await posted_form(request, view)
    config = await owned_config(view, request)
    body: dict[str, Any] = {
        "url": _first(form, "url"),
        "subscribed_events": form.get("subscribed_events", []),
    }
    if token := _first(form, "authorization_token"):
        body["authorization_token"] = token
    errors = await _update_errors(request, body)
    if errors:
        values = {"url": body["url"], "subscribed_events": body["subscribed_events"]}
        return await _config_page(request, view, config, status=422, errors=errors, values=values)
    await view.update(config, ConfigUpdate.model_validate(body).changes())
    return redirect(request, f"/portal/configs/{config['id']}?notice=saved")


async def _update_errors(request: Request, body: dict[str, Any]) -> FieldErrors:
    """The API's rules for a `PATCH` of these fields: the same model and target check."""
    try:
        ConfigUpdate.model_validate(body)
    except ValidationError as exc:
        return field_errors(exc)
    allow = request.app.state.settings.allow_private_targets
    if await url_is_blocked(body["url"], allow_private_targets=allow):
        return {"url": BLOCKED_TARGET_MESSAGE}
    return {}


async def set_enabled(request: Request) -> Response:
    view = await scoped(request)
    form = await posted_form(request, view)
    config = await owned_config(view, request)
    enabled = _first(form, "enabled") == "true"
    await view.update(config, {"enabled": enabled})
    notice = "enabled" if enabled else "disabled"
    return redirect(request, f"/portal/configs/{config['id']}?notice={notice}")


async def reveal_secret(request: Request) -> Response:
    view = await scoped(request)
    await posted_form(request, view)
    config = await owned_config(view, request)
    # Only what the client may see: the HMAC secret (v1) or the public key (v1a).
    return await _config_page(request, view, config, secret=shown_key(config["signing_secret"]))


async def rotate_secret(request: Request) -> Response:
    view = await scoped(request)
    await posted_form(request, view)
    config = await owned_config(view, request)
    if await view.rotate_secret(config) is None:
        raise PageNotFound("There is no such endpoint, or it is not yours to see.")
    return redirect(request, f"/portal/configs/{config['id']}?notice=rotated")


async def ping(request: Request) -> Response:
    view = await scoped(request)
    await posted_form(request, view)
    config = await owned_config(view, request)
    delivery_id = await view.ping(config)
    return redirect(request, f"/portal/deliveries/{delivery_id}?notice=ping")


async def recover_form(request: Request) -> Response:
    view = await scoped(request)
    config = await owned_config(view, request)
    return await _recover_page(request, view, config)


async def _recover_page(
    request: Request, view: Scoped, config: dict[str, Any], *, status: int = 200, **extra: Any
) -> Response:
    now = utcnow()
    health = (await view.health([config["id"]], now=now))[config["id"]]
    since = (now.replace(microsecond=0) - HEALTH_WINDOW).isoformat().replace("+00:00", "Z")
    recovered = request.query_params.get("recovered", "")
    context = {
        "config": config,
        "health": health,
        "values": {"since": since, "until": ""},
        "errors": {},
        "recovered": int(recovered) if recovered.isdigit() else None,
        **extra,
    }
    return render(request, "recover.html", context, status=status)


async def recover(request: Request) -> Response:
    view = await scoped(request)
    form = await posted_form(request, view)
    config = await owned_config(view, request)
    values = {"since": _first(form, "since"), "until": _first(form, "until")}
    try:
        window = RecoverRequest.model_validate({k: v for k, v in values.items() if v})
    except ValidationError as exc:
        return await _recover_page(
            request, view, config, status=422, errors=field_errors(exc), values=values
        )
    count = await view.recover(config, since=window.since, until=window.until)
    return redirect(request, f"/portal/configs/{config['id']}/recover?recovered={count}")


_ONE = "/configs/{config_id:id}"

routes = [
    PageRoute("/", list_configs),
    PageRoute(_ONE, show_config),
    PageRoute(_ONE, edit_config, method="POST"),
    PageRoute(_ONE + "/enabled", set_enabled, method="POST"),
    PageRoute(_ONE + "/secret/reveal", reveal_secret, method="POST"),
    PageRoute(_ONE + "/secret/rotate", rotate_secret, method="POST"),
    PageRoute(_ONE + "/ping", ping, method="POST"),
    PageRoute(_ONE + "/recover", recover_form),
    PageRoute(_ONE + "/recover", recover, method="POST"),
]
