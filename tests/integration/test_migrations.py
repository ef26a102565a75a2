"""The migrations produce exactly the schema the code declares, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from clarion.store import tables


async def test_migrations_match_declared_tables(db_url: str) -> None:
    engine = create_async_engine(db_url)

    def diff(sync_conn):  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return compare_metadata(context, tables.metadata)

    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
    await engine.dispose()
    assert differences == []


async def test_migrations_create_every_table(db_url: str) -> None:
    engine = create_async_engine(db_url)

    def names(sync_conn):  # type: ignore[no-untyped-def]
        from sqlalchemy import inspect

        return set(inspect(sync_conn).get_table_names())

    async with engine.connect() as conn:
        found = await conn.run_sync(names)
    await engine.dispose()
    assert set(tables.metadata.tables) <= found
