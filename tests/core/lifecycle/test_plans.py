"""The query plans of the statements that pick deliveries by an IN list of ids: the
primary key, never the scan of every pending delivery that the status index offers a
planner without statistics (SQLite's, and PostgreSQL's generic plan of a prepared
statement, which asyncpg uses). A claim cost 70 ms with a backlog of 60,000."""

from __future__ import annotations

import re
import sqlite3

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core.lifecycle import attempts, ordering, records

BY_IDS = {
    "claim": attempts._CLAIM,
    "mark_waiting_in_order": ordering._MARK,
    "hand_over": ordering._HAND_OVER,
    "park": attempts._PARK,
    "release": attempts._RELEASE,
    "record": records._UPDATE_DELIVERY,
}


def _sqlite_plan(path: str, statement: sa.Update) -> list[str]:
    sql = str(statement.compile(dialect=sqlite.dialect()))
    with sqlite3.connect(path) as connection:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}", [None] * sql.count("?"))
        return [row[3] for row in rows]


@pytest.mark.parametrize("name", BY_IDS)
def test_sqlite_looks_the_ids_up(fresh_sqlite_url: str, name: str) -> None:
    plan = _sqlite_plan(fresh_sqlite_url.removeprefix("sqlite:///"), BY_IDS[name])

    # The outer statement's own search of `deliveries` (the first line of the plan)
    assert plan[0].startswith("SEARCH deliveries USING INDEX"), plan
    assert plan[0].endswith("(id=?)"), plan


async def _generic_plan(url: str, statement: sa.Update) -> str:
    sql = str(statement.compile(dialect=postgresql.dialect(paramstyle="numeric_dollar")))
    slots = max(int(n) for n in re.findall(r"\$(\d+)", sql))
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        await connection.execute(f"PREPARE by_ids AS {sql}")
        rows = await connection.fetch(f"EXPLAIN EXECUTE by_ids({', '.join(['NULL'] * slots)})")
        return "\n".join(row[0] for row in rows)
    finally:
        await connection.close()


@pytest.mark.parametrize("name", BY_IDS)
async def test_postgresql_looks_the_ids_up(pg_url: str, name: str) -> None:
    plan = await _generic_plan(pg_url, BY_IDS[name])

    # (on a table this small a sequential scan may do as well as the key)
    assert "ix_deliveries_status_next_attempt_at" not in plan, plan
