"""Push vendors end to end: typed push addresses on a user, a template with push content, ``POST /v1/messages``
→ the fake vendor's recorded request → ``sent`` on ``GET /v1/messages/{id}``; and each kind's account saved,
shown masked, refused when wrong (422 naming the field) and probed through ``POST /v1/providers/{name}/test``.

FCM, APNs and Web Push send no delivery receipts, so without more a push stays ``sent``. With the account's
``receipt_secret`` the app confirms it: the tests, acting as the app (or the site's service worker), read
``clarion_delivery`` and ``clarion_ack`` from what the fake vendor received — FCM's recorded ``data``, the Web Push
payload the fake push service decrypted (served over HTTPS with a certificate made for the test, trusted through
the account's ``ca_certificate``) — post them to ``POST /r/{name}`` and see ``delivered``; a wrong ack is 401 and
changes nothing, an ack for a delivery Clarion does not know is kept pending, a duplicate is 200, and a
confirmation that beats the worker's record of the send is applied once the send is recorded. JPush's received
report is polled: running the receipt poller makes a push that reached a device ``delivered``, and JPush takes
app confirmations too."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clarion import bootstrap
from clarion.api.app import create_app
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
    _, delivery = await sent_message(api, clarion)
    return delivery


async def sent_message(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> tuple[str, dict[str, Any]]:
    """``POST /v1/messages`` of the push template, the worker run: the message id and its one delivery, sent."""
    await put_template(api, "shipped", channels=PUSH_TEMPLATE)
    answer = await api.post("/v1/messages", json={"template": "shipped", "to": "u1", "data": {"order": "A-1"}})
    assert answer.status_code == 202, answer.text
    [queued] = answer.json()["messages"]
    await drain(clarion)
    detail = (await api.get(f"/v1/messages/{queued['id']}")).json()
    assert detail["status"] == "sent", detail
    [delivery] = detail["deliveries"]
    return queued["id"], delivery


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


# -- delivery confirmed by the app; JPush's received report -------------------------------------------------------

RECEIPT_SECRET = "app-confirm-secret-0123456789"


@pytest.fixture
async def app_side(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """The API as an app or a service worker calls it: no API key."""
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


async def shown(api: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
    """The message's one delivery as ``GET /v1/messages/{id}`` shows it now."""
    [now] = (await api.get(f"/v1/messages/{message_id}")).json()["deliveries"]
    return dict(now)


def vapid_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def test_webpush_confirmed_by_the_service_worker_is_delivered(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, app_side: httpx.AsyncClient
) -> None:
    async with FakeWebPush(tls=True) as fake:
        config = {
            "vapid_private_key": vapid_pem(),
            "vapid_subject": "mailto:ops@example.com",
            "ca_certificate": fake.ca_certificate,
            "receipt_secret": RECEIPT_SECRET,
            "allow_private_networks": True,
        }
        assert (await put_provider(api, "web-main", "webpush", config)).status_code == 201
        subscription = fake.subscribe("laptop")
        assert subscription["endpoint"].startswith("https://127.0.0.1:")
        await put_user(api, "u1", attributes={"name": "李雷"}, addresses={"push": [subscription]})
        message_id, delivery = await sent_message(api, clarion)
    [pushed] = fake.pushes
    payload = pushed.payload
    assert (payload["title"], payload["body"]) == ("订单 A-1 已发货", "你好 李雷，点击查看物流")
    assert payload["clarion_delivery"] == delivery["id"] == delivery["provider_message_id"]
    assert RECEIPT_SECRET not in (await api.get("/v1/providers/web-main")).text
    confirm = {"delivery": payload["clarion_delivery"], "ack": payload["clarion_ack"]}
    answer = await app_side.post("/r/web-main", json=confirm)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 1, "pending": 0, "ignored": 0}
    now = await shown(api, message_id)
    assert now["status"] == "delivered"
    assert now["timeline"][-1]["reason"] == "confirmed by the app"


async def fcm_confirming(api: httpx.AsyncClient, fake: FakeFcm, *, secret: str | None = RECEIPT_SECRET) -> None:
    config = {"service_account": fake.service_account(), "endpoint": fake.url, "allow_private_networks": True}
    if secret:
        config["receipt_secret"] = secret
    assert (await put_provider(api, "fcm-main", "fcm", config)).status_code == 201
    await put_user(
        api, "u1", attributes={"name": "李雷"}, addresses={"push": [{"platform": "fcm", "token": "android-1"}]}
    )


async def test_fcm_confirmed_by_the_app_is_delivered_and_a_wrong_ack_changes_nothing(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, app_side: httpx.AsyncClient
) -> None:
    async with FakeFcm() as fake:
        await fcm_confirming(api, fake)
        message_id, delivery = await sent_message(api, clarion)
    [message] = fake.messages
    data = message["data"]
    assert data["clarion_delivery"] == delivery["id"]
    forged = await app_side.post("/r/fcm-main", json={"delivery": delivery["id"], "ack": "A" * 43})
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "unauthorized"
    assert (await shown(api, message_id))["status"] == "sent"
    confirm = {"delivery": data["clarion_delivery"], "ack": data["clarion_ack"], "status": "delivered"}
    first = await app_side.post("/r/fcm-main", json=[confirm])
    again = await app_side.post("/r/fcm-main", json=confirm)
    assert first.json() == {"accepted": 1, "pending": 0, "ignored": 0}
    assert again.status_code == 200 and again.json() == {"accepted": 0, "pending": 0, "ignored": 1}
    now = await shown(api, message_id)
    assert now["status"] == "delivered"
    assert [e["status"] for e in now["timeline"]].count("delivered") == 1


async def test_an_app_confirmation_for_an_unknown_delivery_is_kept_pending_and_a_bad_status_is_422(
    api: httpx.AsyncClient, app_side: httpx.AsyncClient
) -> None:
    async with FakeFcm() as fake:
        await fcm_confirming(api, fake)
    unknown = "01J0000000000000000000UNKNOWN"
    ack = base64.urlsafe_b64encode(hmac.new(RECEIPT_SECRET.encode(), unknown.encode(), hashlib.sha256).digest())
    confirm = {"delivery": unknown, "ack": ack.decode().rstrip("=")}
    kept = await app_side.post("/r/fcm-main", json=confirm)
    assert kept.status_code == 200 and kept.json() == {"accepted": 0, "pending": 1, "ignored": 0}
    refused = await app_side.post("/r/fcm-main", json={**confirm, "status": "undelivered"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_receipt"


async def test_a_confirmation_that_beats_the_record_of_the_send_is_applied_when_it_is_written(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, app_side: httpx.AsyncClient
) -> None:
    async with FakeFcm() as fake:
        await fcm_confirming(api, fake)
        await put_template(api, "shipped", channels=PUSH_TEMPLATE)
        answer = await api.post("/v1/messages", json={"template": "shipped", "to": "u1", "data": {"order": "A-1"}})
        [queued] = answer.json()["messages"]
        [delivery] = (await api.get(f"/v1/messages/{queued['id']}")).json()["deliveries"]
        digest = hmac.new(RECEIPT_SECRET.encode(), delivery["id"].encode(), hashlib.sha256).digest()
        early = {"delivery": delivery["id"], "ack": base64.urlsafe_b64encode(digest).decode().rstrip("=")}
        held = await app_side.post("/r/fcm-main", json=early)
        assert held.json() == {"accepted": 0, "pending": 1, "ignored": 0}, delivery["status"]
        await drain(clarion)
    assert fake.messages[0]["data"]["clarion_ack"] == early["ack"]
    assert (await shown(api, queued["id"]))["status"] == "delivered"


async def test_an_account_without_a_receipt_secret_takes_no_confirmations(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, app_side: httpx.AsyncClient
) -> None:
    async with FakeFcm() as fake:
        await fcm_confirming(api, fake, secret=None)
        _, delivery = await sent_message(api, clarion)
    assert "clarion_ack" not in fake.messages[0]["data"]
    answer = await app_side.post("/r/fcm-main", json={"delivery": delivery["id"], "ack": "x"})
    assert answer.status_code == 404


async def jpush_account(api: httpx.AsyncClient, fake: FakeJPush, **extra: Any) -> None:
    config = {
        "app_key": fake.app_key,
        "master_secret": fake.master_secret,
        "endpoint": fake.url,
        "report_endpoint": fake.url,
        "allow_private_networks": True,
        **extra,
    }
    assert (await put_provider(api, "jpush-main", "jpush", config)).status_code == 201
    await put_user(api, "u1", attributes={"name": "李雷"}, addresses={"push": [{"platform": "jpush", "token": "rid"}]})


async def test_jpush_received_report_polled_makes_the_push_delivered(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    async with FakeJPush() as fake:
        fake.registered, fake.offline = {"rid"}, {"rid"}
        await jpush_account(api, fake)
        message_id, delivery = await sent_message(api, clarion)
        assert delivery["provider_message_id"] in fake.sent
        assert clarion.poller is not None
        waiting = await clarion.poller.run_once()  # the phone is offline: nothing received yet
        assert (await shown(api, message_id))["status"] == "sent"
        fake.offline = set()
        done = await clarion.poller.run_once()
    assert (waiting.asked, waiting.tally.accepted, waiting.failed) == (1, 0, [])
    assert (done.asked, done.tally.accepted, done.failed) == (1, 1, [])
    now = await shown(api, message_id)
    assert now["status"] == "delivered"
    assert now["timeline"][-1]["reason"] == "JPush received report: jpush_received=1"


async def test_jpush_confirmed_by_the_app_is_delivered_and_the_later_report_changes_nothing(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, app_side: httpx.AsyncClient
) -> None:
    async with FakeJPush() as fake:
        await jpush_account(api, fake, receipt_secret=RECEIPT_SECRET)
        message_id, delivery = await sent_message(api, clarion)
        extras = fake.pushes[0]["notification"]["android"]["extras"]
        assert delivery["provider_message_id"] in fake.sent  # JPush's msg_id, not the delivery id
        confirm = {"delivery": extras["clarion_delivery"], "ack": extras["clarion_ack"]}
        answer = await app_side.post("/r/jpush-main", json=confirm)
        assert answer.json() == {"accepted": 1, "pending": 0, "ignored": 0}
        assert clarion.poller is not None
        done = await clarion.poller.run_once()  # no longer sent: not asked about
    assert done.asked == 0
    now = await shown(api, message_id)
    assert now["status"] == "delivered" and now["timeline"][-1]["reason"] == "confirmed by the app"
