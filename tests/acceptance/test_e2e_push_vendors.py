"""Push vendors end to end: typed push addresses on a user, a template with push content, ``POST /v1/messages``
→ the fake vendor's recorded request → ``sent`` on ``GET /v1/messages/{id}``; and each kind's account saved,
shown masked, refused when wrong (422 naming the field) and probed through ``POST /v1/providers/{name}/test``.

Push vendors send no delivery receipts (FCM and APNs do not call back), so ``sent`` is as far as they go."""

from __future__ import annotations

import base64
import os
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user
from tests.fakes.apns import FakeApns
from tests.fakes.fcm import FakeFcm
from tests.fakes.jpush import FakeJPush
from tests.fakes.webpush import FakeWebPush

DEVICE = "c3" * 32
PUSH_TEMPLATE = {
    "push": {
        "title": "订单 {data.order} 已发货",
        "body": "你好 {name}，点击查看物流",
        "url": "https://shop.example/o/{data.order}",
    }
}


async def put_provider(api: httpx.AsyncClient, name: str, kind: str, config: dict[str, Any]) -> httpx.Response:
    return await api.put(f"/v1/providers/{name}", json={"channel": "push", "kind": kind, "config": config})


async def send_and_drain(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> dict[str, Any]:
    await put_template(api, "shipped", channels=PUSH_TEMPLATE)
    answer = await api.post("/v1/messages", json={"template": "shipped", "to": "u1", "data": {"order": "A-1"}})
    assert answer.status_code == 202, answer.text
    [queued] = answer.json()["messages"]
    await drain(clarion)
    detail = (await api.get(f"/v1/messages/{queued['id']}")).json()
    assert detail["status"] == "sent", detail
    [delivery] = detail["deliveries"]
    return delivery


async def test_push_to_fcm_reaches_the_typed_fcm_token(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    async with FakeFcm() as fake:
        config = {"service_account": fake.service_account(), "endpoint": fake.url, "allow_private_networks": True}
        assert (await put_provider(api, "fcm-main", "fcm", config)).status_code == 201
        addresses = {"push": [{"platform": "fcm", "token": "android-1"}, {"platform": "apns", "token": DEVICE}]}
        await put_user(api, "u1", attributes={"name": "李雷"}, addresses=addresses)
        delivery = await send_and_drain(api, clarion)
    [message] = fake.messages
    assert message["token"] == "android-1"
    assert message["notification"] == {"title": "订单 A-1 已发货", "body": "你好 李雷，点击查看物流"}
    assert message["data"]["url"] == "https://shop.example/o/A-1" and message["data"]["link_type"] == "h5"
    assert (delivery["status"], delivery["provider"]) == ("sent", "fcm-main")
    assert delivery["provider_message_id"].startswith("projects/clarion-test/messages/")


async def test_push_to_apns_reaches_the_device_over_http2(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    async with FakeApns() as fake:
        config = {
            "team_id": fake.team_id,
            "key_id": fake.key_id,
            "private_key": fake.private_key,
            "bundle_id": fake.bundle_id,
            "endpoint": fake.url,
            "ca_certificate": fake.ca_certificate,
            "allow_private_networks": True,
        }
        assert (await put_provider(api, "apns-main", "apns", config)).status_code == 201
        await put_user(
            api, "u1", attributes={"name": "李雷"}, addresses={"push": [{"platform": "apns", "token": DEVICE}]}
        )
        delivery = await send_and_drain(api, clarion)
    [request] = fake.requests
    assert request.alpn == "h2" and request.path == f"/3/device/{DEVICE}"
    assert request.json()["aps"]["alert"] == {"title": "订单 A-1 已发货", "body": "你好 李雷，点击查看物流"}
    assert delivery["provider_message_id"] and delivery["provider"] == "apns-main"


async def test_push_to_jpush_sends_bare_tokens_as_registration_ids(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    async with FakeJPush() as fake:
        config = {
            "app_key": fake.app_key,
            "master_secret": fake.master_secret,
            "endpoint": fake.url,
            "allow_private_networks": True,
        }
        assert (await put_provider(api, "jpush-main", "jpush", config)).status_code == 201
        await put_user(
            api,
            "u1",
            attributes={"name": "李雷"},
            addresses={"push": ["rid-old-bare", {"platform": "jpush", "token": "rid-2"}]},
        )
        delivery = await send_and_drain(api, clarion)
    [pushed] = fake.pushes
    assert pushed["audience"] == {"registration_id": ["rid-old-bare", "rid-2"]}
    assert pushed["notification"]["android"]["title"] == "订单 A-1 已发货"
    assert delivery["provider_message_id"].isdigit()


# -- addresses ----------------------------------------------------------------------------------------------


def subscription() -> dict[str, Any]:
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    keys = {
        "p256dh": base64.urlsafe_b64encode(point).decode().rstrip("="),
        "auth": base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="),
    }
    return {"endpoint": "https://fcm.googleapis.com/fcm/send/abc", "expirationTime": None, "keys": keys}


async def test_user_push_addresses_take_bare_typed_and_subscription_items(api: httpx.AsyncClient) -> None:
    sub = subscription()
    push = ["bare", {"platform": "fcm", "token": "f1"}, {"platform": "webpush", "token": sub}, sub]
    stored = await put_user(api, "u1", addresses={"push": push})
    assert stored["addresses"]["push"] == push
    assert (await api.get("/v1/users/u1")).json()["addresses"]["push"] == push


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ({"platform": "nokia", "token": "x"}, "platform must be one of"),
        ({"platform": "fcm", "token": ""}, "token must be a string"),
        ({"platform": "webpush", "token": "not-a-subscription"}, "Web Push subscription"),
        ({"endpoint": "http://push.example/x", "keys": {}}, "https URL"),
        ({"platform": "fcm", "token": "x", "extra": 1}, "unknown push address fields"),
        (42, "token string or an object"),
    ],
)
async def test_user_push_address_of_the_wrong_shape_is_422_naming_the_item(
    api: httpx.AsyncClient, item: Any, says: str
) -> None:
    answer = await api.put("/v1/users/u1", json={"addresses": {"push": ["ok", item]}})
    assert answer.status_code == 422, answer.text
    assert "addresses.push.1" in answer.text and says in answer.text


# -- accounts and probes ------------------------------------------------------------------------------------


async def test_fcm_account_hides_its_key_refuses_a_broken_one_and_probes(api: httpx.AsyncClient) -> None:
    async with FakeFcm() as fake:
        key = fake.service_account()
        config = {"service_account": key, "endpoint": fake.url, "allow_private_networks": True}
        assert (await put_provider(api, "fcm-main", "fcm", config)).status_code == 201
        shown = (await api.get("/v1/providers/fcm-main")).text
        assert "PRIVATE KEY" not in shown and key["private_key"][40:80] not in shown
        broken = await put_provider(api, "fcm-bad", "fcm", {"service_account": {"client_email": "x@y"}})
        probe = (
            await api.post("/v1/providers/fcm-main/test", json={"address": {"platform": "fcm", "token": "dev"}})
        ).json()
        fake.fail("gone:APA91b", 404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        dead = (await api.post("/v1/providers/fcm-main/test", json={"address": "gone:APA91b"})).json()
    assert broken.status_code == 422 and "config.service_account" in broken.text
    assert probe["ok"] is True and probe["provider_message_id"].startswith("projects/")
    assert fake.messages[0]["notification"] == {"title": "Clarion test", "body": "Clarion test message"}
    assert dead["ok"] is False and dead["error"]["code"] == "UNREGISTERED"


async def test_apns_account_probe_reports_an_unregistered_device(api: httpx.AsyncClient) -> None:
    async with FakeApns() as fake:
        config = {
            "team_id": fake.team_id,
            "key_id": fake.key_id,
            "private_key": fake.private_key,
            "bundle_id": fake.bundle_id,
            "endpoint": fake.url,
            "ca_certificate": fake.ca_certificate,
            "allow_private_networks": True,
        }
        assert (await put_provider(api, "apns-main", "apns", config)).status_code == 201
        assert "PRIVATE KEY" not in (await api.get("/v1/providers/apns-main")).text
        broken = await put_provider(api, "apns-bad", "apns", {**config, "private_key": "nope"})
        ok = (await api.post("/v1/providers/apns-main/test", json={"address": DEVICE})).json()
        fake.errors[DEVICE] = (410, "Unregistered")
        gone = (await api.post("/v1/providers/apns-main/test", json={"address": DEVICE})).json()
    assert broken.status_code == 422 and "config.private_key" in broken.text
    assert ok["ok"] is True
    assert gone["ok"] is False and gone["error"]["code"] == "Unregistered" and gone["error"]["transient"] is False


async def test_webpush_account_probe_sends_an_encrypted_push(api: httpx.AsyncClient) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    async with FakeWebPush() as fake:
        config = {
            "vapid_private_key": pem.decode(),
            "vapid_subject": "mailto:ops@example.com",
            "allow_private_networks": True,
        }
        assert (await put_provider(api, "web-main", "webpush", config)).status_code == 201
        assert "PRIVATE KEY" not in (await api.get("/v1/providers/web-main")).text
        broken = await put_provider(api, "web-bad", "webpush", {**config, "vapid_subject": "ops"})
        probe = (await api.post("/v1/providers/web-main/test", json={"address": fake.subscribe("laptop")})).json()
    assert broken.status_code == 422 and "config.vapid_subject" in broken.text
    assert probe["ok"] is True, probe
    assert fake.pushes[0].payload == {"title": "Clarion test", "body": "Clarion test message"}


async def test_jpush_account_probe_reports_a_wrong_master_secret_as_misconfigured(api: httpx.AsyncClient) -> None:
    async with FakeJPush() as fake:
        config = {
            "app_key": fake.app_key,
            "master_secret": "wrong",
            "endpoint": fake.url,
            "allow_private_networks": True,
        }
        assert (await put_provider(api, "jpush-main", "jpush", config)).status_code == 201
        assert "wrong" not in (await api.get("/v1/providers/jpush-main")).text
        broken = await put_provider(api, "jpush-bad", "jpush", {**config, "platforms": ["symbian"]})
        probe = (await api.post("/v1/providers/jpush-main/test", json={"address": ["rid-1"]})).json()
    assert broken.status_code == 422 and "config.platforms" in broken.text
    assert probe["ok"] is False and probe["error"]["code"] == "1004" and probe["error"]["misconfigured"] is True
