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


def test_the_api_key_migration_keeps_existing_keys(db_url: str) -> None:
    """0005 adds expiry and last use to keys made before it (a table rebuilt on SQLite), and can be undone."""
    import asyncio
    from datetime import UTC, datetime

    import sqlalchemy as sa
    from alembic import command

    from clarion.store import migrate

    config = migrate.alembic_config(db_url)
    command.downgrade(config, "0004")
    try:
        made = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

        async def run(sql: str, **values: object) -> list[tuple[object, ...]]:
            engine = create_async_engine(db_url)
            async with engine.begin() as conn:
                result = await conn.execute(sa.text(sql), values)
                rows = [tuple(r) for r in result] if result.returns_rows else []
            await engine.dispose()
            return rows

        asyncio.run(
            run(
                "INSERT INTO api_keys (id, name, prefix, key_hash, roles, created_at) "
                "VALUES ('k1', 'old', 'clk_abcd', :hash, '[\"admin\"]', :at)",
                hash="a" * 64,
                at=made if "postgresql" in db_url else made.replace(tzinfo=None).isoformat(),
            )
        )
        migrate.upgrade(db_url)
        rows = asyncio.run(run("SELECT id, name, expires_at, last_used_at, revoked_at FROM api_keys"))
        assert rows == [("k1", "old", None, None, None)]
        command.downgrade(config, "0004")
        assert asyncio.run(run("SELECT id, name FROM api_keys")) == [("k1", "old")]
    finally:
        migrate.upgrade(db_url)
