"""SQLite's query plans of the statements that pick deliveries by an IN list of ids: the
primary key, never the scan of every pending delivery that the status index offers a
planner without statistics (a claim cost 70 ms with a backlog of 60,000)."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from core.lifecycle import attempts, ordering

BY_IDS = {"claim": attempts._CLAIM, "mark_waiting_in_order": ordering._MARK}


def _plan(path: str, statement: sa.Update) -> list[str]:
    sql = str(statement.compile(dialect=sqlite.dialect()))
    with sqlite3.connect(path) as connection:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}", [None] * sql.count("?"))
        return [row[3] for row in rows]


@pytest.mark.parametrize("name", BY_IDS)
def test_deliveries_are_looked_up_by_their_ids(fresh_sqlite_url: str, name: str) -> None:
    plan = _plan(fresh_sqlite_url.removeprefix("sqlite:///"), BY_IDS[name])

    # The outer statement's own search of `deliveries` (the first line of the plan)
    assert plan[0].startswith("SEARCH deliveries USING INDEX"), plan
    assert plan[0].endswith("(id=?)"), plan
