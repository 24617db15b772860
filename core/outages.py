"""Which errors mean that a server we depend on is away, not that we have a bug.

A lost or refused connection, a PostgreSQL that is shutting down or starting up, a
SQLite file that is locked too long, full or failing, an unreachable Redis: each is
worth retrying later (a `503` from the API, a pause and a retry in the background
processes), and none is a reason to crash or to answer `500`.
"""

from __future__ import annotations

import sqlite3

import asyncpg
import redis.exceptions

OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable, timed out (TimeoutError is an OSError)
    sqlite3.OperationalError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # "connection is closed"
    asyncpg.InternalClientError,  # a pooled connection reset as its server went away
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.InsufficientResourcesError,  # disk full, out of memory, too many connections
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
"""The exception types among which outages are found (`is_outage` decides)."""

_SQLITE_OUTAGES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
    }
)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says a database or broker is unavailable for now."""
    if isinstance(exc, sqlite3.OperationalError):
        # Other operational errors (no such table, a bad statement) are ours.
        return exc.sqlite_errorcode & 0xFF in _SQLITE_OUTAGES
    return isinstance(exc, OUTAGE_TYPES)
