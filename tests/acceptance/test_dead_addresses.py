"""Address hygiene: a device token the vendor declares dead (FCM ``UNREGISTERED``) leaves the user's addresses,
named on the delivery's timeline, while the tokens that work stay; when every token is dead the delivery fails
and the address is removed; the next message goes only where it can arrive."""

from __future__ import annotations

import httpx

from clarion import bootstrap
from tests.acceptance.test_e2e_push_vendors import PUSH_TEMPLATE, put_provider
from tests.conftest import drain, put_template, put_user
from tests.fakes.fcm import FakeFcm

DEAD = {"platform": "fcm", "token": "android-old"}
ALIVE = {"platform": "fcm", "token": "android-new"}


async def send(api: httpx.AsyncClient, order: str = "A-1") -> str:
    answer = await api.post("/v1/messages", json={"template": "shipped", "to": "u1", "data": {"order": order}})
    assert answer.status_code == 202, answer.text
    return answer.json()["messages"][0]["id"]


async def test_a_token_fcm_calls_unregistered_leaves_the_user_and_the_others_stay(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    async with FakeFcm() as fake:
        config = {"service_account": fake.service_account(), "endpoint": fake.url, "allow_private_networks": True}
        assert (await put_provider(api, "fcm-main", "fcm", config)).status_code == 201
        fake.fail("android-old", 404, "NOT_FOUND", "Requested entity was not found.", code="UNREGISTERED")
        await put_user(api, "u1", attributes={"name": "李雷"}, addresses={"push": [DEAD, ALIVE]})
        await put_template(api, "shipped", channels=PUSH_TEMPLATE)
        first = await send(api)
        await drain(clarion)
        [delivery] = (await api.get(f"/v1/messages/{first}")).json()["deliveries"]
        assert delivery["status"] == "sent"
        assert delivery["timeline"][-1]["detail"]["dead_addresses"] == [DEAD]
        assert (await api.get("/v1/users/u1")).json()["addresses"]["push"] == [ALIVE]

        sent_before = len(fake.messages)
        second = await send(api, "A-2")
        await drain(clarion)
        assert (await api.get(f"/v1/messages/{second}")).json()["status"] == "sent"
    assert [m["token"] for m in fake.messages[sent_before:]] == ["android-new"]  # the dead token is not tried again


async def test_when_every_token_is_dead_the_delivery_fails_and_the_address_is_gone(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    async with FakeFcm() as fake:
        config = {"service_account": fake.service_account(), "endpoint": fake.url, "allow_private_networks": True}
        await put_provider(api, "fcm-main", "fcm", config)
        fake.fail("android-old", 404, "NOT_FOUND", "Requested entity was not found.", code="UNREGISTERED")
        await put_user(api, "u1", attributes={"name": "韩梅梅"}, addresses={"push": [DEAD], "email": "u1@example.com"})
        await put_template(api, "shipped", channels=PUSH_TEMPLATE)
        message_id = await send(api)
        await drain(clarion)
    detail = (await api.get(f"/v1/messages/{message_id}")).json()
    assert len(detail["deliveries"]) == 1, detail
    [delivery] = detail["deliveries"]
    assert delivery["status"] == "failed"
    assert delivery["timeline"][-1]["detail"]["dead_addresses"] == [DEAD]
    assert (await api.get("/v1/users/u1")).json()["addresses"] == {"email": "u1@example.com"}
