"""Fixtures shared by the whole suite.

Storage-facing tests run twice: on SQLite (a fresh migrated file per test) and on PostgreSQL (one migrated
database per session, emptied between tests). With ``CI=true`` a missing PostgreSQL fails the run instead
of skipping it, so CI can never go green without the PostgreSQL half."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.settings import Settings
from clarion.store import migrate
from clarion.store import tables as t

PG_ADMIN_URL = os.environ.get("CLARION_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
API_KEY = "clk_test_key_for_the_suite"
REDIS_URL = os.environ.get("CLARION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _unavailable(what: str, exc: BaseException) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI but unavailable: {exc!r}", pytrace=False)
    pytest.skip(f"{what} unavailable: {exc!r}")


async def connect_redis() -> Any:
    """A client on the test database, emptied; skips (or fails, in CI) when Redis is not there."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        _unavailable("Redis", exc)
    await client.flushdb()
    return client


async def disconnect_redis(client: Any) -> None:
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def redis_db() -> AsyncIterator[None]:
    """The Redis test database, emptied before and after the test."""
    client = await connect_redis()
    yield
    await disconnect_redis(client)


def shared_redis(settings: Settings) -> Settings:
    """``settings`` with the Redis that several processes share, under a key prefix of this test's own."""
    return settings.model_copy(update={"redis_url": REDIS_URL, "redis_prefix": f"clarion-{uuid.uuid4().hex[:8]}:"})


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "clarion.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    import asyncpg

    name = f"clarion_t_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    base = sa.make_url(PG_ADMIN_URL)
    url = base.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _truncate(url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    async with engine.begin() as conn:
        names = ", ".join(table.name for table in t.metadata.sorted_tables)
        await conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY"))
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: SQLite file or PostgreSQL (emptied for this test)."""
    if request.param == "sqlite":
        path = tmp_path / "clarion.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    url = request.getfixturevalue("pg_database")
    asyncio.run(_truncate(url))
    return url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        data_dir=str(tmp_path / "var"),
        outbox_dir=str(tmp_path / "var" / "outbox"),
        api_key=API_KEY,
        secret_key="test-secret-key",
        retry_base_seconds=0.05,
        retry_max_seconds=0.5,
        max_attempts=3,
        poll_interval=0.01,
        tune_gc=False,  # thousands of starts in one test process
    )


@pytest.fixture
async def clarion(settings: Settings) -> AsyncIterator[bootstrap.Clarion]:
    """Clarion's services with no background workers: tests drive delivery with ``drain``."""
    services = bootstrap.build(settings)
    await services.start(workers=0)
    yield services
    await services.close()


@pytest.fixture
async def api(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the API, authenticated with the suite's key."""
    app = create_app(clarion=clarion)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://clarion.test", headers={"Authorization": f"Bearer {API_KEY}"}
    ) as client:
        yield client


@pytest.fixture
async def public(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client without an API key: a user's phone following a link, a vendor calling back."""
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


async def drain(clarion: bootstrap.Clarion, *, rounds: int = 50) -> int:
    """Run the dispatcher until nothing is due; returns how many deliveries it handled."""
    total = 0
    for _ in range(rounds):
        handled = await clarion.dispatcher.run_once("test-worker")
        if handled == 0:
            break
        total += handled
    return total


def record_writes(clarion: bootstrap.Clarion) -> list[tuple[Any, dict[str, Any]]]:
    """Every job handed to ``clarion.db.write`` from now on, with its keywords (``urgent``, ``heavy``)."""
    writes: list[tuple[Any, dict[str, Any]]] = []
    write = clarion.db.write

    async def recorded(job: Any, **options: Any) -> Any:
        writes.append((job, options))
        return await write(job, **options)

    clarion.db.write = recorded  # type: ignore[method-assign]
    return writes


def sink(clarion: bootstrap.Clarion, channel: str = "sms") -> list[dict[str, Any]]:
    """The JSON lines the built-in file provider wrote for ``channel``, in the order it wrote them."""
    path = Path(clarion.settings.outbox_dir) / f"{channel}.jsonl"
    return [orjson.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def put_user(api: httpx.AsyncClient, user_id: str, **body: Any) -> dict[str, Any]:
    response = await api.put(f"/v1/users/{user_id}", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def put_template(api: httpx.AsyncClient, key: str, **body: Any) -> dict[str, Any]:
    body.setdefault("name", key)
    body.setdefault("category", "transactional")
    response = await api.put(f"/v1/templates/{key}", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def set_policies(clarion: bootstrap.Clarion, **document: Any) -> None:
    """Store policy settings (a partial document over the defaults), as ``PUT /v1/policies/settings`` would."""
    from datetime import UTC, datetime

    from clarion.domain.policy import config
    from clarion.store import policies

    settings = config.PolicySettings.from_json(document)

    async def job(conn: Any) -> None:
        await policies.save_settings(conn, settings, datetime.now(UTC))

    await clarion.db.write(job)
    clarion.catalog.invalidate()


async def set_approval(clarion: bootstrap.Clarion, **document: Any) -> None:
    """Store the approval settings, as ``PUT /v1/approval/settings`` would (``levels={}``: nothing needs review)."""
    from datetime import UTC, datetime

    from clarion.domain import approval
    from clarion.store import templates

    settings = approval.Settings.from_json(document)

    async def job(conn: Any) -> None:
        await templates.save_settings(conn, settings, datetime.now(UTC))

    await clarion.db.write(job)
    clarion.catalog.invalidate()
