"""Routes at dispatch against real HTTP vendors on loopback: two ``sms_http`` accounts, each pointing at its own
server, share the traffic by the route's weights, and a retry after a transient failure goes to the other."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from clarion import bootstrap
from clarion.domain import retry
from clarion.domain.policy import config
from clarion.store import tables as t
from tests.conftest import drain, put_template, set_policies
from tests.integration.loopback import LoopbackServer, Reply

#: chi-square with one degree of freedom: above this, p < 0.001
CHI_SQUARE_P001_DF1 = 10.828
SENDS = 2_000


async def sms_account(api: httpx.AsyncClient, name: str, url: str) -> None:
    body = {
        "channel": "sms",
        "kind": "sms_http",
        "config": {"url": f"{url}/v1/sms", "allow_private_networks": True, "timeout": 5},
    }
    response = await api.put(f"/v1/providers/{name}", json=body)
    assert response.status_code == 201, response.text


async def users(api: httpx.AsyncClient, count: int) -> list[str]:
    ids = [f"u{i}" for i in range(count)]
    items = [{"user_id": u, "addresses": {"sms": f"+1415555{i:04d}"}} for i, u in enumerate(ids)]
    response = await api.post("/v1/users:batch", json=items)
    assert response.status_code == 200, response.text
    assert response.json()["failed"] == []
    return ids


async def quiet(clarion: bootstrap.Clarion) -> None:
    """No policy stands between these sends and their providers."""
    await set_policies(clarion, enabled=dict.fromkeys(config.POLICIES, False))


async def test_weights_split_2000_sends_as_configured(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    ok = Reply(200, {"message_id": "m"})
    async with LoopbackServer(default=ok) as a, LoopbackServer(default=ok) as b:
        await sms_account(api, "aliyun-a", a.url)
        await sms_account(api, "tencent-b", b.url)
        route = {
            "channel": "sms",
            "providers": [{"name": "aliyun-a", "weight": 70}, {"name": "tencent-b", "weight": 30}],
        }
        assert (await api.put("/v1/routes/sms", json=route)).status_code == 201
        await quiet(clarion)
        await put_template(api, "note", channels={"sms": {"text": "hi {n}"}})
        recipients = await users(api, 1_000)
        for n in range(SENDS // len(recipients)):
            response = await api.post("/v1/messages", json={"template": "note", "to": recipients, "data": {"n": n}})
            assert response.status_code in (200, 201, 202), response.text
        clarion.providers.rand.seed(20261202)
        assert await drain(clarion, rounds=200) == SENDS

    observed = {"aliyun-a": len(a.requests), "tencent-b": len(b.requests)}
    assert sum(observed.values()) == SENDS
    expected = {"aliyun-a": SENDS * 0.7, "tencent-b": SENDS * 0.3}
    chi_square = sum((observed[n] - expected[n]) ** 2 / expected[n] for n in expected)
    assert chi_square < CHI_SQUARE_P001_DF1, (observed, chi_square)
    async with clarion.db.read() as conn:
        rows = (await conn.execute(t.deliveries.select().with_only_columns(t.deliveries.c.provider))).scalars().all()
    assert {n: rows.count(n) for n in observed} == observed  # each delivery says where it went


async def test_a_retry_prefers_a_provider_not_tried_yet(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    busy = Reply(503, {"error": "busy"})
    async with (
        LoopbackServer(default=busy) as down_1,
        LoopbackServer(default=busy) as down_2,
        LoopbackServer(default=Reply(200, {"message_id": "m"})) as up,
    ):
        clarion.providers.breakers = None  # this test is about the retry's preference, not the breakers
        await sms_account(api, "busy-1", down_1.url)
        await sms_account(api, "busy-2", down_2.url)
        await sms_account(api, "spare", up.url)
        # by weight nearly every attempt would go to a busy one; the third of three attempts reaches "spare" only
        # if each retry avoids every provider the delivery already tried, not just the last
        weights = {"busy-1": 1000, "busy-2": 1000, "spare": 1}
        route = {"channel": "sms", "providers": [{"name": n, "weight": w} for n, w in weights.items()]}
        assert (await api.put("/v1/routes/sms", json=route)).status_code == 201
        await quiet(clarion)
        await put_template(api, "code", channels={"sms": {"text": "code {n}"}})
        recipients = await users(api, 20)
        response = await api.post("/v1/messages", json={"template": "code", "to": recipients, "data": {"n": 1}})
        message_ids = [m["id"] for m in response.json()["messages"]]
        clarion.providers.rand.seed(7)
        await until_settled(clarion)

    assert len(up.requests) == 20
    assert len(down_1.requests) + len(down_2.requests) >= 30
    for message_id in message_ids:
        [delivery] = (await api.get(f"/v1/messages/{message_id}")).json()["deliveries"]
        assert (delivery["status"], delivery["provider"]) == ("sent", "spare"), delivery
        outcomes = [e for e in delivery["timeline"] if e["status"] in ("queued", "sent") and e.get("detail")]
        went = [e["detail"]["provider"] for e in outcomes]  # each attempt says which provider it went to
        assert len(went) == delivery["attempts"]
        assert went[-1] == "spare" and len(set(went)) == len(went), went


async def until_settled(clarion: bootstrap.Clarion, within: float = 20) -> None:
    """Drain, and again once retries come due, until no delivery is queued or being sent."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        await drain(clarion)
        async with clarion.db.read() as conn:
            pending: Any = (
                await conn.execute(
                    t.deliveries.select()
                    .with_only_columns(t.deliveries.c.id)
                    .where(t.deliveries.c.status.in_(("queued", "sending")))
                )
            ).all()
        if not pending:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{len(pending)} deliveries still pending"
        await asyncio.sleep(0.05)


async def test_a_transient_failure_is_retried_at_once_on_a_provider_not_tried_yet(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    """With the production backoff (10 s and more), a delivery one provider fails still goes out within the
    same drain through the route's other provider; once every provider was tried, the backoff applies."""
    clarion.dispatcher.retry_policy = retry.RetryPolicy()  # 10 s, 20 s, … : a wait this test would see
    async with (
        LoopbackServer(default=Reply(503, {"error": "busy"})) as down,
        LoopbackServer(default=Reply(200, {"message_id": "m"})) as up,
    ):
        clarion.providers.breakers = None
        await sms_account(api, "busy", down.url)
        await sms_account(api, "spare", up.url)
        route = {"channel": "sms", "providers": [{"name": "busy", "weight": 1000}, {"name": "spare", "weight": 1}]}
        assert (await api.put("/v1/routes/sms", json=route)).status_code == 201
        await quiet(clarion)
        await put_template(api, "code", channels={"sms": {"text": "code {n}"}})
        recipients = await users(api, 10)
        response = await api.post("/v1/messages", json={"template": "code", "to": recipients, "data": {"n": 1}})
        clarion.providers.rand.seed(3)
        await drain(clarion)
    assert len(up.requests) == 10
    for m in response.json()["messages"]:
        [delivery] = (await api.get(f"/v1/messages/{m['id']}")).json()["deliveries"]
        assert (delivery["status"], delivery["provider"]) == ("sent", "spare"), delivery
        reasons = [e["reason"] for e in delivery["timeline"] if e["status"] == "queued" and e.get("detail")]
        assert all(r.startswith("retry now on another provider after attempt 1") for r in reasons), reasons

    async with LoopbackServer(default=Reply(503, {"error": "busy"})) as down_again:
        config = {"url": f"{down_again.url}/v1/sms", "allow_private_networks": True, "timeout": 5}
        moved = await api.put("/v1/providers/busy", json={"channel": "sms", "kind": "sms_http", "config": config})
        assert moved.status_code == 200
        assert (await api.delete("/v1/providers/spare")).status_code == 204
        clarion.invalidate()
        later = await api.post("/v1/messages", json={"template": "code", "to": recipients[:1], "data": {"n": 2}})
        await drain(clarion)
    [delivery] = (await api.get(f"/v1/messages/{later.json()['messages'][0]['id']}")).json()["deliveries"]
    assert delivery["status"] == "queued"
    assert delivery["timeline"][-1]["reason"].startswith("retry in "), delivery["timeline"][-1]
