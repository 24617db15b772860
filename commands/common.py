"""What the commands share: failing clearly, settings, a database for one command, JSON."""

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


def fail(message: str) -> NoReturn:
    click.echo(f"webhooks: {message}", err=True)
    sys.exit(1)


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        fail(str(exc))


def migrated_settings() -> Settings:
    """Settings, with the schema brought up to date; a clear message and exit 1 if not."""
    settings = settings_or_exit()
    try:
        upgrade(settings.database_url)
    except MigrationError as exc:
        fail(str(exc))
    return settings


def needs_redis(settings: Settings, process: str) -> Settings:
    if not settings.redis_url:
        fail(
            f"the {process} needs REDIS_URL (e.g. redis://127.0.0.1:6379/0); "
            "`webhooks serve` runs everything without Redis"
        )
    return settings


def run_with_db(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        db = open_database(settings.database_url, pool_size=2)
        await db.connect()
        try:
            return await work(db)
        finally:
            await db.disconnect()

    return asyncio.run(run())


def json_default(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, default=json_default))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")


MAX_DURATION_S = 100 * 365 * 86400


def parse_duration_s(text: str) -> int:
    """`90d`, `12h`, `30m`, `45s`, `2w` or plain seconds, up to 100 years; ValueError
    otherwise."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30d, 12h, 15m, 3600)")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds > MAX_DURATION_S:
        raise ValueError(f"duration {text!r} is longer than 100 years")
    return seconds
