"""`webhooks deliveries`: the delivery audit for operators (SPEC 8), any client's."""

from __future__ import annotations

import re
from typing import Any

import click

from commands.common import fail, json_default, migrated_settings, print_json, run_with_db
from core.database import Database
from core.lifecycle import Status


@click.group()
def deliveries() -> None:
    """Audit deliveries (operators: any client's, deleted configurations' included)."""


STATUSES = [status.value for status in Status]
_ITEM_FIELDS = ("id", "event_type", "status", "attempt_count", "created_at", "last_attempt_at")


def _cell(value: Any) -> str:
    return "-" if value is None else json_default(value)


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
        fail(f"not a {kind} id (a UUID): {value!r}")
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
    settings = migrated_settings()

    async def listed(db: Database) -> list[dict[str, Any]] | None:
        if not await config_exists(db, config_id):
            return None
        filters = Filters(status=status)
        return (await list_deliveries(db, config_id, filters, limit=limit, cursor=None))[0]

    items = run_with_db(settings, listed)
    if items is None:
        fail(f"no configuration {config_id}")
    if as_json:
        # Through the API's schema: the same JSON as `GET .../deliveries` answers.
        print_json([DeliveryItem.model_validate(item).model_dump(mode="json") for item in items])
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
    settings = migrated_settings()
    item = run_with_db(settings, lambda db: get_delivery(db, None, delivery_id))
    if item is None:
        fail(f"no delivery {delivery_id}")
    if as_json:
        detail = DeliveryDetail.model_validate(item).model_dump(mode="json")
        print_json({**detail, "config_id": item["config_id"]})
        return
    attempts = item.pop("attempts")
    for key, value in item.items():
        click.echo(f"{key:16} {_cell(value)}")
    click.echo()
    fields = ("number", "started_at", "duration_ms", "status_code", "error")
    click.echo(_table(attempts, fields) if attempts else "no attempts yet")
