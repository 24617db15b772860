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
from core.database.urls import SQLITE, DatabaseUrl, parse_database_url


class MigrationError(Exception):
    """The schema could not be brought up to date; the message is safe to print."""


def alembic_config(database_url: str | DatabaseUrl) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    url = parse_database_url(database_url).alembic_url
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextlib.contextmanager
def _sqlite_file_lock(path: str) -> Iterator[None]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.migrate-lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(database_url: str | DatabaseUrl) -> None:
    """Migrate to the newest revision; raise `MigrationError` if the database refuses."""
    url = parse_database_url(database_url)
    lock = _sqlite_file_lock(url.sqlite_path) if url.backend == SQLITE else contextlib.nullcontext()
    try:
        with lock:
            command.upgrade(alembic_config(url), "head")
    except Exception as exc:
        raise MigrationError(
            f"could not migrate the database: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:300]
