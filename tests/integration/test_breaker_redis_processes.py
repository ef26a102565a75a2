"""A circuit breaker shared by two real ``clarion worker`` processes through Redis, against real sms_http vendors
on loopback: a vendor answering 503 opens its breaker in process A; process B, started afterwards, routes
everything to the other account without trying the failing one; once the vendor recovers and the cool-down
is over, a half-open probe closes it; nothing failed. The health view (this test's own process) reads the same
shared state."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from clarion import bootstrap
from clarion.settings import Settings
from clarion.store import tables as t
from tests.integration.loopback import LoopbackServer, Reply
from tests.integration.test_rate_limit_dispatch import OK, put_sms, send_to
from tests.integration.test_rate_limit_processes import settings, until_sent, worker_env, worker_process
from tests.integration.test_routing_dispatch import quiet

__all__ = ["settings"]  # the fixture: the suite's settings with the Redis both processes share

COOL_DOWN = 10  # long enough for process B to start and send its batch while the breaker is still open


async def more(api: httpx.AsyncClient, recipients: list[str], n: int) -> None:
    response = await api.post("/v1/messages", json={"template": "code", "to": recipients, "data": {"n": n}})
    assert response.status_code in (200, 201, 202), response.text


async def test_a_breaker_opened_in_one_process_is_open_in_the_other_and_a_probe_closes_it(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, settings: Settings, tmp_path: Path
) -> None:
    env = worker_env(settings, redis=True)
    async with LoopbackServer(default=Reply(503, {"error": "busy"})) as flaky, LoopbackServer(default=OK) as steady:
        await put_sms(api, "flaky", flaky.url, breaker={"consecutive": 3, "cool_down": COOL_DOWN})
        await put_sms(api, "steady", steady.url)
        route = {"channel": "sms", "providers": [{"name": "flaky", "weight": 50}, {"name": "steady", "weight": 50}]}
        assert (await api.put("/v1/routes/sms", json=route)).status_code == 201
        await quiet(clarion)

        with worker_process(env, tmp_path / "a.log"):  # process A meets the outage
            await send_to(api, 20)
            await until_sent(clarion, 20, within=30)
        view = (await api.get("/v1/providers/flaky/health")).json()
        assert view["breaker"]["state"] == "open", view
        assert view["breaker"]["reason"].startswith("3 transient failures in a row"), view
        assert view["breaker"]["shared"] is True
        assert view["transient"] >= 3  # the window A recorded, read from this process
        tried = len(flaky.requests)
        assert tried >= 3

        with worker_process(env, tmp_path / "b.log"):  # process B knows it is open without trying it
            await more(api, [f"u{i}" for i in range(20)], 2)
            await until_sent(clarion, 40, within=30)
            assert len(flaky.requests) == tried, "process B tried the account whose breaker A opened"
            view = (await api.get("/v1/providers/flaky/health")).json()
            assert view["breaker"]["state"] == "open", "the cool-down ended before B's sends: the test proved nothing"

            flaky.default = OK  # the vendor recovers; both processes run for the probe
            with worker_process(env, tmp_path / "a2.log"):
                opened = view["breaker"]["since"]
                await asyncio.sleep(max(0.0, opened + COOL_DOWN - time.time()) + 0.2)
                sent = 40
                for n in range(3, 23):
                    await more(api, ["u0", "u1"], n)
                    sent += 2
                    await until_sent(clarion, sent, within=30)
                    view = (await api.get("/v1/providers/flaky/health")).json()
                    if view["breaker"]["state"] == "closed":
                        break
        assert view["breaker"]["state"] == "closed", view
        assert view["breaker"]["reason"] == "half-open probe succeeded"
        assert len(flaky.requests) > tried

    async with clarion.db.read() as conn:
        d = t.deliveries
        statuses = (await conn.execute(sa.select(d.c.status, sa.func.count()).group_by(d.c.status))).all()
    assert dict(statuses) == {"sent": sent}  # nothing failed, nothing left behind
