"""Database URLs, parsed once, with SQLAlchemy's `make_url`.

    >>> url = parse_database_url("postgres://app:secret@db.internal/webhooks")
    >>> url.backend, url.redacted
    ('postgresql', 'postgresql://app:***@db.internal/webhooks')

`postgres://`, which many platforms hand out, is an alias of `postgresql://`. A SQLite
URL names a file: every process and connection must see the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

Backend = Literal["sqlite", "postgresql"]
SQLITE: Backend = "sqlite"
POSTGRESQL: Backend = "postgresql"
_SCHEMES: dict[str, Backend] = {"sqlite": SQLITE, "postgresql": POSTGRESQL, "postgres": POSTGRESQL}
# The SQLAlchemy drivers Alembic migrates with: the drivers the service runs on.
_ALEMBIC_DRIVERS: dict[Backend, str] = {
    SQLITE: "sqlite+aiosqlite",
    POSTGRESQL: "postgresql+asyncpg",
}


class DatabaseUrlError(ValueError):
    """Not a URL of a database the service runs on; the message never holds the URL
    (it may hold a password)."""


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed `sqlite:///PATH` or `postgresql://...` URL (see `parse_database_url`)."""

    url: URL
    backend: Backend

    @property
    def sqlite_path(self) -> str:
        """The file of a SQLite database."""
        assert self.backend == SQLITE, "not a SQLite URL"
        return str(self.url.database)

    @property
    def alembic_url(self) -> str:
        """The URL with the driver Alembic migrates through."""
        url = self.url.set(drivername=_ALEMBIC_DRIVERS[self.backend])
        return url.render_as_string(hide_password=False)

    @property
    def redacted(self) -> str:
        """The URL for messages and logs: the password, if any, as `***`."""
        return self.url.render_as_string(hide_password=True)

    def __str__(self) -> str:
        return self.url.render_as_string(hide_password=False)


def parse_database_url(text: str | DatabaseUrl) -> DatabaseUrl:
    """`text` parsed, with `postgres://` as `postgresql://`; raises `DatabaseUrlError`."""
    if isinstance(text, DatabaseUrl):
        return text
    try:
        url = make_url(text)
    except ArgumentError:
        raise DatabaseUrlError("not a URL: use sqlite:///PATH or postgresql://...") from None
    backend = _SCHEMES.get(url.drivername)
    if backend is None:
        raise DatabaseUrlError("must start with sqlite:/// or postgresql://")
    if backend == SQLITE and (not url.database or url.database.startswith(":memory:")):
        raise DatabaseUrlError("sqlite:/// needs a file path, e.g. sqlite:///./webhooks.db")
    return DatabaseUrl(url.set(drivername=backend), backend)
