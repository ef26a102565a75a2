"""Circuit breakers at dispatch against real HTTP vendors on loopback: an account answering 503 opens its breaker,
the traffic moves to the route's other account with nothing failed, and after the cool-down a half-open probe
closes it again. Breakers live in the counters layer (memory here, one process)."""

from __future__ import annotations

import asyncio

import httpx

from clarion import bootstrap
from clarion.domain import breaker
from clarion.store import tables as t
from tests.conftest import drain, put_template
from tests.integration.loopback import LoopbackServer, Reply
from tests.integration.test_routing_dispatch import quiet, sms_account, until_settled, users

FAST = breaker.Thresholds(consecutive=5, error_rate=0.5, min_attempts=20, window=60, cool_down=0.5)


async def statuses(clarion: bootstrap.Clarion) -> dict[str, int]:
    async with clarion.db.read() as conn:
        rows = (await conn.execute(t.deliveries.select().with_only_columns(t.deliveries.c.status))).scalars().all()
    return {s: rows.count(s) for s in set(rows)}


async def test_a_vendor_answering_503_opens_its_breaker_and_traffic_moves_with_nothing_failed(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    assert clarion.providers.breakers is not None
    clarion.providers.breakers.thresholds = lambda _name: FAST  # type: ignore[attr-defined]
    clarion.dispatcher.batch_size = 10
    busy, ok = Reply(503, {"error": "busy"}), Reply(200, {"message_id": "m"})
    async with LoopbackServer(default=busy) as flaky, LoopbackServer(default=ok) as steady:
        await sms_account(api, "flaky", flaky.url)
        await sms_account(api, "steady", steady.url)
        route = {"channel": "sms", "providers": [{"name": "flaky", "weight": 90}, {"name": "steady", "weight": 10}]}
        assert (await api.put("/v1/routes/sms", json=route)).status_code == 201
        await quiet(clarion)
        await put_template(api, "code", channels={"sms": {"text": "code {n}"}})
        recipients = await users(api, 60)
        response = await api.post("/v1/messages", json={"template": "code", "to": recipients, "data": {"n": 1}})
        assert response.status_code in (200, 201, 202), response.text
        clarion.providers.rand.seed(11)
        await drain(clarion)

        view = await clarion.providers.breakers.health("flaky", clarion.providers.clock())
        assert view["breaker"]["state"] == "open"  # type: ignore[index]
        assert "transient failures in a row" in view["breaker"]["reason"]  # type: ignore[index]
        hit_while_closed = len(flaky.requests)
        assert hit_while_closed < 20  # it stopped going there: by weight ~54 of 60 first attempts would have
        await until_settled(clarion)
        assert len(flaky.requests) == hit_while_closed  # (cool-down 0.5 s may let one probe through)
        assert (await statuses(clarion)) == {"sent": 60}

        # the vendor recovers; after the cool-down the next delivery is the probe, and its success closes it
        flaky.default = ok
        await asyncio.sleep(0.6)
        response = await api.post("/v1/messages", json={"template": "code", "to": recipients[:5], "data": {"n": 2}})
        await until_settled(clarion)
        view = await clarion.providers.breakers.health("flaky", clarion.providers.clock())
        assert view["breaker"]["state"] == "closed", view  # type: ignore[index]
        assert view["breaker"]["reason"] == "half-open probe succeeded"  # type: ignore[index]
        assert len(flaky.requests) > hit_while_closed
        assert (await statuses(clarion)) == {"sent": 65}

    # the transition is on the timeline of the deliveries whose outcomes caused it; the skips on the others
    events = (await api.get(f"/v1/messages/{response.json()['messages'][0]['id']}")).json()
    assert events["deliveries"][0]["status"] == "sent"
    async with clarion.db.read() as conn:
        details = (
            await conn.execute(t.delivery_events.select().with_only_columns(t.delivery_events.c.detail))
        ).scalars()
        details = [d for d in details if d]
    opened = [d for d in details if any(m["to"] == "open" for m in d.get("breaker", []))]
    assert opened and "transient failures in a row" in opened[0]["breaker"][0]["reason"]
    skipped = [d for d in details if str(d.get("skipped", {}).get("flaky", "")).startswith("breaker open: ")]
    assert skipped
