"""Provider rate limits and per-account breaker thresholds at dispatch, against real HTTP vendors on loopback
(sms_http accounts), one process, SQLite and PostgreSQL: the vendor's recorded request times stay within the
limit with nothing failed and no attempt spent, a kind's documented ``default_rate`` applies when the account
sets none, and an account's own ``breaker`` thresholds are the ones that open it."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.channels import registry
from clarion.channels.sms_http import SmsHttpProvider
from clarion.domain import ratelimit
from clarion.store import tables as t
from tests.conftest import put_template
from tests.integration.loopback import LoopbackServer, Recorded, Reply
from tests.integration.test_routing_dispatch import quiet, until_settled, users

OK = Reply(200, {"message_id": "m"})
#: requests handed over evenly can reach the vendor a little bunched (connections opened, tasks scheduled): the
#: vendor's clock may count this many more in a second than Clarion's buckets let go in it
JITTER = 2


class PacedSms(SmsHttpProvider):
    """An SMS kind whose vendor documents 20 requests a second: the registry's look-up of ``default_rate``."""

    kind: ClassVar[str] = "paced_sms"
    default_rate: ClassVar[tuple[float | None, float | None]] = (20, None)


def stamped(times: list[float]) -> Any:
    """A loopback handler that records when each request arrived and lets the default reply answer."""

    def handler(_request: Recorded) -> None:
        times.append(time.monotonic())

    return handler


def busiest_second(times: list[float]) -> int:
    """The most requests in any one-second stretch (each stretch starting at a request)."""
    ordered = sorted(times)
    return max(sum(1 for t in ordered if start <= t < start + 1.0) for start in ordered)


async def put_sms(api: httpx.AsyncClient, name: str, url: str, kind: str = "sms_http", **extra: Any) -> None:
    config = {"url": f"{url}/v1/sms", "allow_private_networks": True, "timeout": 5, **extra}
    response = await api.put(f"/v1/providers/{name}", json={"channel": "sms", "kind": kind, "config": config})
    assert response.status_code == 201, response.text


async def send_to(api: httpx.AsyncClient, count: int) -> None:
    await put_template(api, "code", channels={"sms": {"text": "code {n}"}})
    recipients = await users(api, count)
    response = await api.post("/v1/messages", json={"template": "code", "to": recipients, "data": {"n": 1}})
    assert response.status_code in (200, 201, 202), response.text


async def deliveries(clarion: bootstrap.Clarion) -> list[Any]:
    async with clarion.db.read() as conn:
        d = t.deliveries
        return list((await conn.execute(sa.select(d.c.status, d.c.attempts))).all())


async def run_workers(clarion: bootstrap.Clarion, until_sent: int, within: float) -> None:
    """The real dispatch loop (two of them, as ``clarion worker`` runs) until ``until_sent`` deliveries are sent."""
    stop = asyncio.Event()
    loops = [asyncio.create_task(clarion.dispatcher.run(stop, index=i)) for i in range(2)]
    deadline = time.monotonic() + within
    try:
        while sum(1 for row in await deliveries(clarion) if row.status == "sent") < until_sent:
            assert time.monotonic() < deadline, f"not all sent: {await deliveries(clarion)}"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*loops)


async def test_100_deliveries_under_a_limit_of_20_a_second_never_exceed_it_and_none_fails(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    times: list[float] = []
    async with LoopbackServer(default=OK, handler=stamped(times)) as vendor:
        await put_sms(api, "paced", vendor.url, rate_limit={"per_second": 20})
        await quiet(clarion)
        await send_to(api, 100)
        started = time.monotonic()
        await run_workers(clarion, 100, within=40)
        took = time.monotonic() - started

    assert len(times) == 100
    burst = ratelimit.Rate(per_second=20).buckets()[0].capacity
    assert busiest_second(times) <= 20 + burst + JITTER, sorted(times)
    assert took >= (100 - burst) / 20 * 0.9  # the limit was applied, not merely unobserved
    rows = await deliveries(clarion)
    assert {row.status for row in rows} == {"sent"}
    assert {row.attempts for row in rows} == {1}  # waiting for a token spent no attempt
    async with clarion.db.read() as conn:
        reasons = (await conn.execute(sa.select(t.delivery_events.c.reason))).scalars().all()
    assert any("for its turn under the rate limit of paced (20/s)" in (r or "") for r in reasons)
    metrics = (await api.get("/metrics")).text
    assert 'clarion_provider_rate_limited_total{provider="paced"}' in metrics


async def test_the_health_view_shows_the_accounts_rate_limit_the_kinds_default_and_the_breaker_thresholds(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.KINDS, PacedSms.kind, PacedSms)
    await put_sms(api, "own", "http://127.0.0.1:9", rate_limit={"per_minute": 600}, breaker={"consecutive": 2})
    await put_sms(api, "by-kind", "http://127.0.0.1:9", kind="paced_sms")
    await put_sms(api, "unlimited", "http://127.0.0.1:9", kind="paced_sms", rate_limit={})

    own = (await api.get("/v1/providers/own/health")).json()
    assert own["rate_limit"] == {"per_second": None, "per_minute": 600, "source": "account"}
    assert own["breaker"]["consecutive"] == 2 and own["breaker"]["cool_down"] == 30
    assert own["breaker"]["shared"] is False  # no Redis here: this process's own
    by_kind = (await api.get("/v1/providers/by-kind/health")).json()
    assert by_kind["rate_limit"] == {"per_second": 20, "per_minute": None, "source": "kind"}
    assert by_kind["breaker"]["consecutive"] == 5  # the documented default
    none = (await api.get("/v1/providers/unlimited/health")).json()
    assert none["rate_limit"] == {"per_second": None, "per_minute": None, "source": "none"}
    shown = (await api.get("/v1/providers/own")).json()["config"]
    assert shown["rate_limit"] == {"per_second": None, "per_minute": 600}
    assert shown["breaker"]["consecutive"] == 2


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"rate_limit": {"per_second": 0}}, "config.rate_limit.per_second"),
        ({"rate_limit": {"per_hour": 5}}, "config.rate_limit.per_hour"),
        ({"breaker": {"consecutive": 0}}, "config.breaker.consecutive"),
        ({"breaker": {"error_rate": 1.5}}, "config.breaker.error_rate"),
        ({"breaker": {"cool_down": -1}}, "config.breaker.cool_down"),
    ],
)
async def test_a_bad_rate_limit_or_breaker_config_is_refused_naming_the_field(
    api: httpx.AsyncClient, config: dict[str, Any], field: str
) -> None:
    body = {
        "channel": "sms",
        "kind": "sms_http",
        "config": {"url": "http://127.0.0.1:9/v1/sms", "allow_private_networks": True, **config},
    }
    response = await api.put("/v1/providers/bad", json=body)
    assert response.status_code == 422, response.text
    assert field in response.text


async def test_an_accounts_own_breaker_thresholds_open_it_and_its_cool_down_lets_the_probe_close_it(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    clarion.dispatcher.batch_size = clarion.dispatcher.max_batch_size = 1  # one choice per delivery
    async with LoopbackServer(default=Reply(503, {"error": "busy"})) as flaky, LoopbackServer(default=OK) as steady:
        await put_sms(api, "flaky", flaky.url, breaker={"consecutive": 2, "cool_down": 3})
        await put_sms(api, "steady", steady.url)
        route = {"channel": "sms", "providers": [{"name": "flaky", "weight": 50}, {"name": "steady", "weight": 50}]}
        assert (await api.put("/v1/routes/sms", json=route)).status_code == 201
        await quiet(clarion)
        clarion.providers.rand.seed(3)
        await send_to(api, 20)
        await until_settled(clarion, within=30)

        async with clarion.db.read() as conn:
            details = (await conn.execute(sa.select(t.delivery_events.c.detail))).scalars().all()
        moves = [m for d in details if d for m in d.get("breaker", [])]
        assert moves[0]["to"] == "open" and moves[0]["reason"].startswith("2 transient failures in a row"), moves
        assert len(flaky.requests) <= 3  # two opened it (the default would have taken five); a probe at most
        view = (await api.get("/v1/providers/flaky/health")).json()
        assert view["breaker"]["consecutive"] == 2 and view["breaker"]["cool_down"] == 3
        assert {row.status for row in await deliveries(clarion)} == {"sent"}

        flaky.default = OK
        await asyncio.sleep(3.1)
        response = await api.post("/v1/messages", json={"template": "code", "to": ["u0", "u1", "u2"], "data": {"n": 2}})
        assert response.status_code in (200, 201, 202), response.text
        for _ in range(20):
            await until_settled(clarion, within=10)
            view = (await api.get("/v1/providers/flaky/health")).json()
            if view["breaker"]["state"] == "closed":
                break
            await api.post("/v1/messages", json={"template": "code", "to": ["u3"], "data": {"n": 3}})
        assert view["breaker"]["state"] == "closed", view
        assert view["breaker"]["reason"] == "half-open probe succeeded"
        assert {row.status for row in await deliveries(clarion)} == {"sent"}
