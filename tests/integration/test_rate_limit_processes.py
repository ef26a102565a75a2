"""A rate limit shared by two real ``clarion worker`` processes through Redis: 100 deliveries to an sms_http
account limited to 20 a second, sent by both processes at once, reach the fake vendor at no more than 20 (+ the
documented burst of 2, + 2 for the requests' transit jitter) in any second, and none fails. The same two
processes without Redis each keep their own bucket, and the vendor sees both of them — which is what shows that
both processes did send in the shared run."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.domain import ratelimit
from clarion.settings import Settings
from clarion.store import tables as t
from tests.conftest import put_template, shared_redis
from tests.integration.loopback import LoopbackServer
from tests.integration.test_rate_limit_dispatch import (
    JITTER,
    OK,
    busiest_second,
    deliveries,
    put_sms,
    stamped,
)
from tests.integration.test_routing_dispatch import quiet, users
from tests.processes import worker_process

LIMIT = 20
WARM = 6  # deliveries sent before the measured 100
BURST = ratelimit.Rate(per_second=LIMIT).buckets()[0].capacity


def worker_env(settings: Settings, *, redis: bool) -> dict[str, str]:
    """What a worker process of this test's Clarion is started with: the same database, key and retry schedule,
    and the same Redis (and prefix) when the state is shared."""
    env = {
        **os.environ,
        "CLARION_DATABASE_URL": settings.database_url,
        "CLARION_DATA_DIR": settings.data_dir,
        "CLARION_OUTBOX_DIR": settings.outbox_dir,
        "CLARION_SECRET_KEY": settings.secret_key.get_secret_value() if settings.secret_key else "",
        "CLARION_POLL_INTERVAL": "0.01",
        "CLARION_RETRY_BASE_SECONDS": str(settings.retry_base_seconds),
        "CLARION_RETRY_MAX_SECONDS": str(settings.retry_max_seconds),
        "CLARION_MAX_ATTEMPTS": str(settings.max_attempts),
        "CLARION_TUNE_GC": "false",
    }
    env.pop("CLARION_REDIS_URL", None)
    if redis and settings.redis_url:
        env["CLARION_REDIS_URL"] = settings.redis_url
        env["CLARION_REDIS_PREFIX"] = settings.redis_prefix
    return env


@pytest.fixture
def settings(settings: Settings, redis_db: None) -> Settings:
    """The suite's settings, with the Redis the worker processes share (a prefix of this test's own)."""
    return shared_redis(settings)


async def more(api: httpx.AsyncClient, recipients: list[str], n: int) -> None:
    response = await api.post("/v1/messages", json={"template": "code", "to": recipients, "data": {"n": n}})
    assert response.status_code in (200, 201, 202), response.text


async def until_sent(clarion: bootstrap.Clarion, count: int, within: float) -> list[Any]:
    """Poll the shared database until ``count`` deliveries are sent (by the worker processes)."""
    deadline = time.monotonic() + within
    while True:
        rows = await deliveries(clarion)
        if sum(1 for row in rows if row.status == "sent") >= count:
            return rows
        assert time.monotonic() < deadline, f"not all sent in {within}s: {sorted({r.status for r in rows})}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("shared", [True, False], ids=["through-redis", "per-process"])
async def test_two_worker_processes_keep_one_rate_limit_between_them_through_redis(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, settings: Settings, tmp_path: Path, shared: bool
) -> None:
    times: list[float] = []
    # batches of 10: each process claims its share of the backlog as it comes due, not the first one all of it
    env = {**worker_env(settings, redis=shared), "CLARION_CLAIM_BATCH": "10", "CLARION_CLAIM_BATCH_MAX": "10"}
    async with LoopbackServer(default=OK, handler=stamped(times)) as vendor:
        await put_sms(api, "paced", vendor.url, rate_limit={"per_second": LIMIT})
        await quiet(clarion)
        await put_template(api, "code", channels={"sms": {"text": "code {n}"}})
        await users(api, 100)
        with worker_process(env, tmp_path / "a.log"), worker_process(env, tmp_path / "b.log"):
            # A process's first requests wait for their connections and reach the vendor bunched with the next
            # ones; a few deliveries first, so that what is measured is the limit, not the warm-up.
            await more(api, [f"u{i}" for i in range(WARM)], 0)
            await until_sent(clarion, WARM, within=60)
            await asyncio.sleep(0.5)
            del times[:]
            await more(api, [f"u{i}" for i in range(100)], 1)
            started = time.monotonic()
            rows = await until_sent(clarion, 100 + WARM, within=60)
            took = time.monotonic() - started

    assert len(times) == 100
    assert {row.status for row in rows} == {"sent"}
    assert {row.attempts for row in rows} == {1}  # waiting for a token spent no attempt
    busiest = busiest_second(times)
    print(f"shared={shared}: 100 sent in {took:.1f}s, at most {busiest} in any second")
    if shared:
        assert busiest <= LIMIT + BURST + JITTER, sorted(times)
        assert took >= (100 - 2 * BURST) / LIMIT * 0.9
    else:  # each process its own bucket: the vendor sees both processes' 20 a second at once
        assert busiest > LIMIT + BURST + JITTER, sorted(times)
    async with clarion.db.read() as conn:
        waited = (
            await conn.execute(
                sa.select(sa.func.count()).where(t.delivery_events.c.reason.like("%for its turn under the rate limit%"))
            )
        ).scalar_one()
    assert waited > 0
