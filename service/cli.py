"""The `webhooks` command: migrate, run the processes, manage clients."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click

from core.database import Database, open_database
from core.migrate import MigrationError, upgrade
from core.settings import Settings, SettingsError, get_settings

T = TypeVar("T")


def _fail(message: str) -> NoReturn:
    click.echo(f"webhooks: {message}", err=True)
    sys.exit(1)


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        _fail(str(exc))


def _migrated_settings() -> Settings:
    """Settings, with the schema brought up to date; a clear message and exit 1 if not."""
    settings = _settings()
    try:
        upgrade(settings.database_url)
    except MigrationError as exc:
        _fail(str(exc))
    return settings


def _needs_redis(settings: Settings, process: str) -> Settings:
    if not settings.redis_url:
        _fail(
            f"the {process} needs REDIS_URL (e.g. redis://127.0.0.1:6379/0); "
            "`webhooks serve` runs everything without Redis"
        )
    return settings


def _run_with_db(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        db = open_database(settings.database_url, pool_size=2)
        await db.connect()
        try:
            return await work(db)
        finally:
            await db.disconnect()

    return asyncio.run(run())


def _json_default(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, default=_json_default))


@click.group()
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One JSON object a line with `json`.",
)
@click.option("--log-level", default="INFO", show_default=True)
def main(log_format: str, log_level: str) -> None:
    """Webhook delivery service."""
    from core.logs import configure_logging

    configure_logging(log_format=log_format, level=log_level.upper())


@main.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    settings = _migrated_settings()
    click.echo(f"database is up to date ({settings.database_url.backend})")


@main.command()
def web() -> None:
    """Serve the HTTP API (the Procfile's `web`)."""
    from service.processes import run_web

    run_web(_migrated_settings())


@main.command()
def poller() -> None:
    """Move outbox events to the queue and sweep stranded deliveries (needs REDIS_URL)."""
    from service.processes import run_poller

    run_poller(_needs_redis(_migrated_settings(), "poller"))


@main.command()
def worker() -> None:
    """Deliver webhooks from the queue (needs REDIS_URL)."""
    from service.processes import run_worker

    run_worker(_needs_redis(_migrated_settings(), "worker"))


@main.command()
def serve() -> None:
    """Run web, poller and worker in one process, with an in-process queue (no Redis)."""
    from service.processes import serve as serve_all

    serve_all(_migrated_settings())


@main.group()
def client() -> None:
    """Manage API clients."""


@client.command("create")
@click.argument("name")
def client_create(name: str) -> None:
    """Create a client; prints its API key once, as JSON."""
    from core.clients import create_client

    settings = _migrated_settings()
    _print_json(_run_with_db(settings, lambda db: create_client(db, name)))


@client.command("list")
def client_list() -> None:
    """List clients (never their keys), as JSON lines."""
    from core.clients import list_clients

    settings = _migrated_settings()
    for row in _run_with_db(settings, list_clients):
        _print_json(row)


@client.command("revoke")
@click.argument("client_id")
def client_revoke(client_id: str) -> None:
    """Revoke a client's API key."""
    from core.clients import revoke_client

    settings = _migrated_settings()
    if not _run_with_db(settings, lambda db: revoke_client(db, client_id)):
        _fail(f"no active client {client_id}")
    _print_json({"id": client_id, "revoked": True})


@main.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="Age, e.g. 30d, 12h, 15m or seconds: final deliveries and dispatched events older go.",
)
def prune(older_than: str) -> None:
    """Remove delivered and failed deliveries, their attempts and dispatched outbox rows
    older than a duration, and expired idempotency keys, in small batches."""
    from datetime import timedelta

    from core.clock import utcnow
    from outbox.retention import parse_duration_s
    from outbox.retention import prune as prune_older

    try:
        age = timedelta(seconds=parse_duration_s(older_than))
    except ValueError as exc:
        _fail(str(exc))
    settings = _migrated_settings()
    pruned = _run_with_db(settings, lambda db: prune_older(db, older_than=age, now=utcnow()))
    _print_json(
        {
            "deliveries": pruned.deliveries,
            "attempts": pruned.attempts,
            "outbox": pruned.outbox,
            "idempotency_keys": pruned.idempotency_keys,
        }
    )


@main.group()
def deliveries() -> None:
    """Audit deliveries (operators: any client's, deleted configurations' included)."""


STATUSES = ["pending", "delivered", "failed", "cancelled", "held"]
_ITEM_FIELDS = ("id", "event_type", "status", "attempt_count", "created_at", "last_attempt_at")


def _cell(value: Any) -> str:
    return "-" if value is None else _json_default(value)


def _table(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    cells = [[_cell(row.get(field)) for field in fields] for row in rows]
    widths = [
        max([len(field), *(len(line[i]) for line in cells)]) for i, field in enumerate(fields)
    ]
    lines = ["  ".join(field.ljust(width) for field, width in zip(fields, widths, strict=True))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in cells
    ]
    return "\n".join(lines)


def _id(kind: str, value: str) -> str:
    """`value` as the API's routes take an id (a UUID, in any case), lower-cased as
    stored; anything else exits 1 naming it."""
    from service.routing import IdConvertor

    if re.fullmatch(IdConvertor.regex, value) is None:
        _fail(f"not a {kind} id (a UUID): {value!r}")
    return value.lower()


@deliveries.command("list")
@click.option("--config", "config_id", required=True, help="Configuration id.")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of items, as the API.")
def deliveries_list(config_id: str, status: str | None, limit: int, as_json: bool) -> None:
    """A configuration's deliveries, newest first."""
    from service.deliveries import Filters, config_exists, list_deliveries
    from service.schemas import DeliveryItem

    config_id = _id("configuration", config_id)
    settings = _migrated_settings()

    async def listed(db: Database) -> list[dict[str, Any]] | None:
        if not await config_exists(db, config_id):
            return None
        filters = Filters(status=status)
        return (await list_deliveries(db, config_id, filters, limit=limit, cursor=None))[0]

    items = _run_with_db(settings, listed)
    if items is None:
        _fail(f"no configuration {config_id}")
    if as_json:
        # Through the API's schema: the same JSON as `GET .../deliveries` answers.
        _print_json([DeliveryItem.model_validate(item).model_dump(mode="json") for item in items])
    else:
        click.echo(_table(items, _ITEM_FIELDS))


@deliveries.command("show")
@click.argument("delivery_id")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object: the API's, plus the delivery's `config_id`.",
)
def deliveries_show(delivery_id: str, as_json: bool) -> None:
    """One delivery with its attempts."""
    from service.deliveries import get_delivery
    from service.schemas import DeliveryDetail

    delivery_id = _id("delivery", delivery_id)
    settings = _migrated_settings()
    item = _run_with_db(settings, lambda db: get_delivery(db, None, delivery_id))
    if item is None:
        _fail(f"no delivery {delivery_id}")
    if as_json:
        detail = DeliveryDetail.model_validate(item).model_dump(mode="json")
        _print_json({**detail, "config_id": item["config_id"]})
        return
    attempts = item.pop("attempts")
    for key, value in item.items():
        click.echo(f"{key:16} {_cell(value)}")
    click.echo()
    fields = ("number", "started_at", "duration_ms", "status_code", "error")
    click.echo(_table(attempts, fields) if attempts else "no attempts yet")


if __name__ == "__main__":
    main()
