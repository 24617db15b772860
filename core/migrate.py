"""Bring a database's schema up to date with Alembic, safely from many processes at once.

PostgreSQL serialises migrators with an advisory lock (in `migrations/env.py`); SQLite
with an exclusive lock on a file beside the database.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from core.database import normalize_url


class MigrationError(Exception):
    """The schema could not be brought up to date; the message is safe to print."""


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", _async_url(database_url).replace("%", "%%"))
    return config


def _async_url(database_url: str) -> str:
    url = normalize_url(database_url)
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url.removeprefix("sqlite:")
    return "postgresql+asyncpg:" + url.removeprefix("postgresql:")


@contextlib.contextmanager
def _sqlite_file_lock(database_url: str) -> Iterator[None]:
    path = database_url.removeprefix("sqlite:///")
    if not path or path == ":memory:":
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.migrate-lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(database_url: str) -> None:
    """Migrate to the newest revision; raise `MigrationError` if the database refuses."""
    lock = (
        _sqlite_file_lock(database_url)
        if database_url.startswith("sqlite")
        else contextlib.nullcontext()
    )
    try:
        with lock:
            command.upgrade(alembic_config(database_url), "head")
    except Exception as exc:
        raise MigrationError(
            f"could not migrate the database: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:300]
