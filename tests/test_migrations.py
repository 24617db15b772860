"""The Alembic migrations and `core/tables.py` describe the same schema, on both
backends: a database migrated to the newest revision has every table, column, type,
index and constraint the code declares, and nothing else (Alembic's autogenerate
comparison finds no difference)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from core.database import parse_database_url
from core.tables import metadata


async def _differences(database_url: str, declared: sa.MetaData) -> list[Any]:
    def compare(connection: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, declared))

    engine = create_async_engine(parse_database_url(database_url).alembic_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


async def test_the_migrations_make_the_schema_the_tables_declare(database_url: str) -> None:
    assert await _differences(database_url, metadata) == []


async def test_the_comparison_sees_a_column_the_migrations_lack(database_url: str) -> None:
    declared = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(declared)
    declared.tables["clients"].append_column(sa.Column("nickname", sa.String(20)))

    [(change, *_)] = await _differences(database_url, declared)

    assert change == "add_column"
