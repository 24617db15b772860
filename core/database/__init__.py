"""The data layer: every statement of the service reaches the database through here.

Which module owns what:

- `urls`: database URLs, parsed once with SQLAlchemy's `make_url`.
- `core`: `Database` (a `databases.Database`) and `open_database`; the ways to run a
  statement: `fetch_all`, `fetch_one`, `run_in_transaction` (a write unit) and
  `execute_in_open_transaction` (inside the caller's `db.transaction()`).
- `statements`: `Query` (a statement and its values), `PreparedStatement` (compiled
  once per dialect with SQLAlchemy's public compile API; rows come back as dicts) and
  `FixedInList` (an IN list of fixed size, for statements built once), and `not_by_index`
  (a condition beside such a list that no planner may use an index for).
- `units`: the write unit contract (`WriteUnit`): a generator of `Query`s.
- `sqlite_connections`: how every SQLite connection is set up, BEGIN IMMEDIATE, and
  running a statement on a sqlite3 or aiosqlite connection.
- `sqlite_writer`: SQLite's group commit, on a writer thread with its own connection.
- `sqlite`, `postgres`: the runner of each backend.

Everything here uses the libraries' public APIs only (`tests/test_private_names.py`).
"""

from core.database.core import (
    Database,
    execute_in_open_transaction,
    fetch_all,
    fetch_one,
    open_database,
    record_dict,
    run_in_transaction,
)
from core.database.statements import FixedInList, Query, Row, not_by_index
from core.database.units import WriteUnit
from core.database.urls import DatabaseUrl, DatabaseUrlError, parse_database_url

__all__ = [
    "Database",
    "DatabaseUrl",
    "DatabaseUrlError",
    "FixedInList",
    "Query",
    "Row",
    "WriteUnit",
    "execute_in_open_transaction",
    "fetch_all",
    "fetch_one",
    "not_by_index",
    "open_database",
    "parse_database_url",
    "record_dict",
    "run_in_transaction",
]
