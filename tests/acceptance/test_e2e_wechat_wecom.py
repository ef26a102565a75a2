"""WeChat and WeCom end to end: ``PUT /v1/providers`` → ``POST /v1/messages`` → the fake vendor's recorded
request → (WeChat) the signed ``TEMPLATESENDJOBFINISH`` callback at ``/r/{provider_name}`` → ``GET
/v1/messages/{id}``; the URL check WeChat makes when the server URL is registered; a probe per kind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.store import tables as t
from tests.acceptance.test_e2e_channels import message, put_provider, send_one, statuses
from tests.conftest import drain, put_template, put_user
from tests.fakes import wechat
from tests.fakes.wechat import APP_ID, APP_SECRET, CALLBACK_TOKEN, ENCODING_AES_KEY, FakeWechat
from tests.fakes.wecom import AGENT_ID, CORP_ID, CORP_SECRET, FakeWecom

OPENID = "oFollower1"
WECHAT_CONTENT = {
    "template_id": "tpl_order_shipped",
    "fields": {"thing1": "订单 {data.order}", "name2": "{name}"},
    "url": "https://shop.example.com/orders/{data.order}",
    "miniprogram": {"appid": "wxfedcba9876543210", "pagepath": "pages/order?id={data.order}"},
}


@pytest.fixture
async def vendor_side(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """The API as WeChat's servers call it: no API key."""
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


@pytest.fixture
async def fake_wechat() -> AsyncIterator[FakeWechat]:
    async with FakeWechat() as fake:
        yield fake


@pytest.fixture
async def fake_wecom() -> AsyncIterator[FakeWecom]:
    async with FakeWecom() as fake:
        yield fake


async def wechat_account(api: httpx.AsyncClient, url: str, **config: Any) -> None:
    options = {
        "app_id": APP_ID,
        "app_secret": APP_SECRET,
        "endpoint": url,
        "callback_token": CALLBACK_TOKEN,
        "allow_private_networks": True,
        "timeout": 5,
        **config,
    }
    await put_provider(api, "wx", "wechat", "wechat_oa", options)


async def sent_template_message(api: httpx.AsyncClient, clarion: bootstrap.Clarion, fake: FakeWechat) -> str:
    await wechat_account(api, fake.url)
    await put_user(api, "u1", attributes={"name": "李雷"}, addresses={"wechat": OPENID})
    await put_template(api, "shipped", channels={"wechat": WECHAT_CONTENT})
    message_id = await send_one(api, "shipped", "u1", {"order": "A-1001"})
    assert await drain(clarion) == 1
    return message_id


async def test_a_wechat_template_message_is_sent_and_its_signed_receipt_makes_it_delivered(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient, fake_wechat: FakeWechat
) -> None:
    message_id = await sent_template_message(api, clarion, fake_wechat)

    [sent] = fake_wechat.sends
    delivery = (await message(api, message_id))["deliveries"][0]
    assert sent == {
        "touser": OPENID,
        "template_id": "tpl_order_shipped",
        "url": "https://shop.example.com/orders/A-1001",
        "miniprogram": {"appid": "wxfedcba9876543210", "pagepath": "pages/order?id=A-1001"},
        "data": {"thing1": {"value": "订单 A-1001"}, "name2": {"value": "李雷"}},
        "client_msg_id": delivery["id"],
    }
    msgid = str(fake_wechat.next_msgid)
    assert (delivery["status"], delivery["provider"], delivery["provider_message_id"]) == ("sent", "wx", msgid)

    query, body = wechat.callback(wechat.finished_event(msgid, "success"))
    answer = await vendor_side.post("/r/wx", params=query, content=body, headers={"Content-Type": "text/xml"})
    assert answer.status_code == 200, answer.text
    assert (answer.text, answer.headers["content-type"].split(";")[0]) == ("success", "text/plain")

    detail = await message(api, message_id)
    [delivery] = detail["deliveries"]
    assert (detail["status"], delivery["status"]) == ("delivered", "delivered")
    assert statuses(delivery) == ["queued", "sending", "sent", "delivered"]
    assert delivery["timeline"][-1]["detail"]["vendor_status"] == "success"


async def test_a_user_block_receipt_makes_the_wechat_message_undelivered(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient, fake_wechat: FakeWechat
) -> None:
    message_id = await sent_template_message(api, clarion, fake_wechat)
    query, body = wechat.callback(wechat.finished_event(str(fake_wechat.next_msgid), "failed:user block"))
    answer = await vendor_side.post("/r/wx", params=query, content=body)
    assert answer.status_code == 200, answer.text
    [delivery] = (await message(api, message_id))["deliveries"]
    assert delivery["status"] == "undelivered" and "user block" in delivery["timeline"][-1]["reason"]


async def test_a_safe_mode_receipt_is_decrypted_and_makes_the_message_delivered(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient, fake_wechat: FakeWechat
) -> None:
    message_id = await sent_template_message(api, clarion, fake_wechat)
    await wechat_account(api, fake_wechat.url, encoding_aes_key=ENCODING_AES_KEY)
    event = wechat.finished_event(str(fake_wechat.next_msgid), "success")
    query, body = wechat.callback(event, aes_key=ENCODING_AES_KEY)
    assert b"TEMPLATESENDJOBFINISH" not in body
    answer = await vendor_side.post("/r/wx", params=query, content=body)
    assert (answer.status_code, answer.text) == (200, "success")
    assert (await message(api, message_id))["deliveries"][0]["status"] == "delivered"


async def test_a_wrongly_signed_wechat_callback_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient, fake_wechat: FakeWechat
) -> None:
    message_id = await sent_template_message(api, clarion, fake_wechat)
    query, body = wechat.callback(wechat.finished_event(str(fake_wechat.next_msgid)), token="notTheToken")
    answer = await vendor_side.post("/r/wx", params=query, content=body)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "unauthorized"
    unsigned = await vendor_side.post("/r/wx", content=body)
    assert unsigned.status_code == 401

    [delivery] = (await message(api, message_id))["deliveries"]
    assert statuses(delivery) == ["queued", "sending", "sent"]
    async with clarion.db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(t.receipts))).scalar_one() == 0


async def test_the_accounts_other_wechat_events_are_answered_and_ignored(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient, fake_wechat: FakeWechat
) -> None:
    await wechat_account(api, fake_wechat.url)
    subscribe = b"<xml><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>"
    query, body = wechat.callback(subscribe)
    answer = await vendor_side.post("/r/wx", params=query, content=body)
    assert (answer.status_code, answer.text) == (200, "success")
    async with clarion.db.read() as conn:  # nothing kept: the event is not a receipt
        assert (await conn.execute(sa.select(sa.func.count()).select_from(t.receipts))).scalar_one() == 0


async def test_wechat_checks_the_server_url_with_a_signed_get(
    api: httpx.AsyncClient, vendor_side: httpx.AsyncClient, fake_wechat: FakeWechat, fake_wecom: FakeWecom
) -> None:
    await wechat_account(api, fake_wechat.url)
    query, _ = wechat.callback(b"")
    answer = await vendor_side.get("/r/wx", params={**query, "echostr": "7421638795315487"})
    assert (answer.status_code, answer.text) == (200, "7421638795315487")
    assert answer.headers["content-type"].startswith("text/plain")

    wrong, _ = wechat.callback(b"", token="notTheToken")
    refused = await vendor_side.get("/r/wx", params={**wrong, "echostr": "7421638795315487"})
    assert refused.status_code == 401 and "7421638795315487" not in refused.text

    await wechat_account(api, fake_wechat.url, callback_token=None)
    assert (await vendor_side.get("/r/wx", params={**query, "echostr": "1"})).status_code == 404
    config = {"corp_id": CORP_ID, "corp_secret": CORP_SECRET, "agent_id": AGENT_ID, "endpoint": fake_wecom.url}
    await put_provider(api, "wecom", "wecom", "wecom_app", {**config, "allow_private_networks": True})
    assert (await vendor_side.get("/r/wecom", params={**query, "echostr": "1"})).status_code == 404
    assert (await vendor_side.get("/r/nobody", params={**query, "echostr": "1"})).status_code == 404


async def test_a_wecom_app_message_reaches_the_userid_and_stays_sent(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, fake_wecom: FakeWecom
) -> None:
    config = {"corp_id": CORP_ID, "corp_secret": CORP_SECRET, "agent_id": AGENT_ID, "endpoint": fake_wecom.url}
    await put_provider(api, "wecom", "wecom", "wecom_app", {**config, "allow_private_networks": True, "timeout": 5})
    await put_user(api, "u1", attributes={"name": "张三"}, addresses={"wecom": "zhangsan"})
    await put_template(api, "leave", channels={"wecom": {"title": "请假审批", "markdown": "**{name}** 的请假已批准"}})
    message_id = await send_one(api, "leave", "u1")
    assert await drain(clarion) == 1

    [sent] = fake_wecom.sends
    assert sent["touser"] == "zhangsan" and sent["agentid"] == AGENT_ID
    assert sent["markdown"] == {"content": "**张三** 的请假已批准"}
    [delivery] = (await message(api, message_id))["deliveries"]
    assert (delivery["status"], delivery["provider"], delivery["provider_message_id"]) == ("sent", "wecom", "msg1")


async def test_a_wecom_robot_post_reaches_the_group_and_is_delivered(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, fake_wecom: FakeWecom
) -> None:
    config = {"webhook_url": fake_wecom.robot_url, "allow_private_networks": True, "timeout": 5}
    await put_provider(api, "ops-robot", "wecom", "wecom_robot", config)
    shown = (await api.get("/v1/providers/ops-robot")).json()
    assert fake_wecom.robot_key not in str(shown)
    await put_user(api, "ops", addresses={"wecom": "ops-group"})
    await put_template(api, "alert", channels={"wecom": {"markdown": "磁盘 {data.disk} 已满"}})
    message_id = await send_one(api, "alert", "ops", {"disk": "/var"})
    assert await drain(clarion) == 1

    assert fake_wecom.posts == [{"msgtype": "markdown", "markdown": {"content": "磁盘 /var 已满"}}]
    [delivery] = (await message(api, message_id))["deliveries"]
    assert (delivery["status"], delivery["provider"]) == ("delivered", "ops-robot")


# -- probes ------------------------------------------------------------------------------------------------


async def test_a_wechat_probe_reports_the_msgid_or_a_dead_openid(
    api: httpx.AsyncClient, fake_wechat: FakeWechat
) -> None:
    await wechat_account(api, fake_wechat.url)
    content = {"template_id": "tpl_probe", "fields": {"thing1": "Clarion test"}}
    ok = await api.post("/v1/providers/wx/test", json={"address": OPENID, "content": content})
    assert ok.status_code == 200, ok.text
    assert ok.json()["ok"] and ok.json()["provider_message_id"] == str(fake_wechat.next_msgid)

    fake_wechat.fail("oGone", 43004, "require subscribe")
    gone = (await api.post("/v1/providers/wx/test", json={"address": "oGone", "content": content})).json()
    assert gone["ok"] is False
    assert gone["error"]["code"] == "43004" and gone["error"]["dead_address"] is True
    assert "require subscribe" in gone["error"]["message"]

    no_content = await api.post("/v1/providers/wx/test", json={"address": OPENID})
    assert no_content.status_code == 422 and no_content.json()["error"]["details"]["field"] == "content"


async def test_a_wecom_app_probe_sends_the_test_text_and_reports_a_bad_secret(
    api: httpx.AsyncClient, fake_wecom: FakeWecom
) -> None:
    config = {"corp_id": CORP_ID, "corp_secret": CORP_SECRET, "agent_id": AGENT_ID, "endpoint": fake_wecom.url}
    await put_provider(api, "wecom", "wecom", "wecom_app", {**config, "allow_private_networks": True})
    ok = (await api.post("/v1/providers/wecom/test", json={"address": "lisi"})).json()
    assert ok["ok"] and ok["provider_message_id"] == "msg1"
    assert fake_wecom.sends[0]["msgtype"] == "markdown" and "Clarion test" in fake_wecom.sends[0]["markdown"]["content"]

    await put_provider(
        api, "wecom", "wecom", "wecom_app", {**config, "corp_secret": "wrong", "allow_private_networks": True}
    )
    bad = (await api.post("/v1/providers/wecom/test", json={"address": "lisi"})).json()
    assert bad["ok"] is False and (bad["error"]["code"], bad["error"]["misconfigured"]) == ("40001", True)


async def test_a_wecom_robot_probe_posts_to_the_group(api: httpx.AsyncClient, fake_wecom: FakeWecom) -> None:
    config = {"key": fake_wecom.robot_key, "endpoint": fake_wecom.url, "allow_private_networks": True}
    await put_provider(api, "ops-robot", "wecom", "wecom_robot", config)
    answer = (await api.post("/v1/providers/ops-robot/test", json={"address": "ops group"})).json()
    assert answer["ok"] and answer["status"] == "delivered"
    assert len(fake_wecom.posts) == 1


@pytest.mark.parametrize(
    ("kind", "config", "field"),
    [
        ("wechat_oa", {"app_id": "gh_0123456789ab", "app_secret": "x"}, "app_id"),
        ("wecom_app", {"corp_id": CORP_ID, "corp_secret": "x", "agent_id": "one"}, "agent_id"),
        ("wecom_robot", {"webhook_url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"}, "webhook_url"),
    ],
)
async def test_a_bad_account_is_refused_naming_the_field(
    api: httpx.AsyncClient, kind: str, config: dict[str, Any], field: str
) -> None:
    channel = "wechat" if kind == "wechat_oa" else "wecom"
    answer = await api.put("/v1/providers/bad", json={"channel": channel, "kind": kind, "config": config})
    assert answer.status_code == 422, answer.text
    assert field in answer.text
