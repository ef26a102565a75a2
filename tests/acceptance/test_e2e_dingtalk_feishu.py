"""DingTalk and Feishu end to end: a template → ``POST /v1/messages`` → the dispatcher → the fake vendor's
recorded request → the status on ``GET /v1/messages/{id}``; receipts by polling (``dingtalk_work``) and by
Feishu's signed read event at ``POST /r/{provider_name}`` (``feishu_app``); and each kind's probe through
``POST /v1/providers/{name}/test``. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.pipeline import feedback
from tests.acceptance.test_e2e_channels import message, put_provider, send_one, statuses
from tests.conftest import drain, put_template, put_user
from tests.fakes import dingtalk, feishu
from tests.fakes.dingtalk import FakeDingTalk
from tests.fakes.feishu import FakeFeishu, event, read_event

OPEN_ID = "ou_84aad35d084aa403a838cf73ee18467"
TEMPLATE = {"title": "订单 {data.order}", "markdown": "订单 **{data.order}** 已发货"}


@pytest.fixture
async def vendor_side(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """The API as Feishu calls it: no API key."""
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


def robot_config(fake: FakeDingTalk) -> dict[str, Any]:
    return {
        "access_token": dingtalk.ROBOT_TOKEN,
        "secret": dingtalk.ROBOT_SECRET,
        "endpoint": fake.url + "/robot/send",
        "allow_private_networks": True,
    }


def work_config(fake: FakeDingTalk) -> dict[str, Any]:
    return {
        "app_key": dingtalk.APP_KEY,
        "app_secret": dingtalk.APP_SECRET,
        "agent_id": dingtalk.AGENT_ID,
        "endpoint": fake.url,
        "allow_private_networks": True,
    }


def bot_config(fake: FakeFeishu) -> dict[str, Any]:
    return {
        "token": feishu.BOT_TOKEN,
        "secret": feishu.BOT_SECRET,
        "endpoint": fake.url + "/open-apis/bot/v2/hook",
        "allow_private_networks": True,
    }


def app_config(fake: FakeFeishu) -> dict[str, Any]:
    return {
        "app_id": feishu.APP_ID,
        "app_secret": feishu.APP_SECRET,
        "endpoint": fake.url,
        "verification_token": feishu.VERIFICATION_TOKEN,
        "encrypt_key": feishu.ENCRYPT_KEY,
        "allow_private_networks": True,
    }


async def shipped(api: httpx.AsyncClient, channel: str, address: str) -> str:
    """A user with ``address`` on ``channel`` and a template for it; the message sent to them, queued."""
    await put_user(api, "u1", addresses={channel: address})
    await put_template(api, "shipped", channels={channel: TEMPLATE})
    return await send_one(api, "shipped", "u1", {"order": "A-1001"})


async def test_a_dingtalk_robot_posts_the_rendered_markdown_to_its_group(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    async with FakeDingTalk() as fake:
        await put_provider(api, "ding-robot", "dingtalk", "dingtalk_robot", robot_config(fake))
        message_id = await shipped(api, "dingtalk", "zhangsan")
        assert await drain(clarion) == 1
    [post] = fake.robot_posts
    assert post["markdown"] == {"title": "订单 A-1001", "text": "订单 **A-1001** 已发货"}
    [delivery] = (await message(api, message_id))["deliveries"]
    assert (delivery["provider"], delivery["status"]) == ("ding-robot", "delivered")


async def test_a_dingtalk_work_notification_is_sent_then_polled_to_read(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    async with FakeDingTalk() as fake:
        await put_provider(api, "ding", "dingtalk", "dingtalk_work", work_config(fake))
        message_id = await shipped(api, "dingtalk", "zhangsan")
        assert await drain(clarion) == 1
        [(task_id, task)] = fake.tasks.items()
        assert (task.userid, task.msg["markdown"]["text"]) == ("zhangsan", "订单 **A-1001** 已发货")
        [delivery] = (await message(api, message_id))["deliveries"]
        assert (delivery["status"], delivery["provider_message_id"]) == ("sent", str(task_id))

        fake.read(task_id)
        provider = await clarion.providers.get("ding")
        polled = await provider.poll_receipts([str(task_id)])  # type: ignore[attr-defined]

        async def job(conn: Any) -> feedback.Tally:
            return await feedback.receive(conn, "ding", polled, datetime.now(UTC))

        await clarion.db.write(job)
    detail = await message(api, message_id)
    [delivery] = detail["deliveries"]
    assert (detail["status"], delivery["status"]) == ("read", "read")
    assert statuses(delivery)[-1] == "read"


async def test_a_feishu_bot_posts_a_signed_card_to_its_group(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    async with FakeFeishu() as fake:
        await put_provider(api, "lark-bot", "feishu", "feishu_bot", bot_config(fake))
        message_id = await shipped(api, "feishu", OPEN_ID)
        assert await drain(clarion) == 1
    [post] = fake.bot_posts
    assert post["card"]["elements"] == [{"tag": "markdown", "content": "订单 **A-1001** 已发货"}]
    assert post["sign"] == feishu.bot_sign(feishu.BOT_SECRET, post["timestamp"])
    assert (await message(api, message_id))["deliveries"][0]["status"] == "delivered"


async def test_a_feishu_app_message_is_read_when_feishu_posts_the_signed_read_event(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    async with FakeFeishu() as fake:
        await put_provider(api, "lark", "feishu", "feishu_app", app_config(fake))
        message_id = await shipped(api, "feishu", OPEN_ID)
        assert await drain(clarion) == 1
    [(feishu_id, (open_id, card))] = fake.messages.items()
    assert (open_id, card["header"]["title"]["content"]) == (OPEN_ID, "订单 A-1001")
    [delivery] = (await message(api, message_id))["deliveries"]
    assert (delivery["status"], delivery["provider_message_id"]) == ("sent", feishu_id)

    forged = event(read_event([feishu_id]), encrypt_key="not-the-encrypt-key")
    refused = await vendor_side.post("/r/lark", **forged)
    assert refused.status_code == 401, refused.text
    assert (await message(api, message_id))["deliveries"][0]["status"] == "sent"

    answer = await vendor_side.post("/r/lark", **event(read_event([feishu_id]), encrypted=True))
    assert (answer.status_code, answer.json()) == (200, {"accepted": 1, "pending": 0, "ignored": 0})
    detail = await message(api, message_id)
    [delivery] = detail["deliveries"]
    assert (detail["status"], delivery["status"]) == ("read", "read")
    assert "Feishu" in delivery["timeline"][-1]["reason"]


async def test_feishu_s_url_verification_is_answered_with_its_challenge(
    api: httpx.AsyncClient, vendor_side: httpx.AsyncClient
) -> None:
    async with FakeFeishu() as fake:
        await put_provider(api, "lark", "feishu", "feishu_app", app_config(fake))
    check = {"challenge": "c-8f2e", "token": feishu.VERIFICATION_TOKEN, "type": "url_verification"}
    answer = await vendor_side.post("/r/lark", **event(check, encrypt_key=None))
    assert (answer.status_code, answer.json()) == (200, {"challenge": "c-8f2e"})
    forged = await vendor_side.post("/r/lark", **event({**check, "token": "forged"}, encrypt_key=None))
    assert forged.status_code == 401


async def test_a_saved_account_shows_its_secrets_masked_and_a_bad_field_is_named(api: httpx.AsyncClient) -> None:
    async with FakeFeishu() as fake:
        await put_provider(api, "lark", "feishu", "feishu_app", app_config(fake))
    shown = (await api.get("/v1/providers/lark")).json()["config"]
    assert shown["app_secret"] == shown["encrypt_key"] == shown["verification_token"] == "********"
    assert shown["app_id"] == feishu.APP_ID
    bad = await api.put(
        "/v1/providers/ding",
        json={"channel": "dingtalk", "kind": "dingtalk_work", "config": {"app_key": "k", "app_secret": "s"}},
    )
    assert bad.status_code == 422 and "config.agent_id" in bad.text
    wrong_channel = await api.put(
        "/v1/providers/ding", json={"channel": "feishu", "kind": "dingtalk_robot", "config": {"access_token": "t"}}
    )
    assert wrong_channel.status_code == 422


# -- the probe, per kind ---------------------------------------------------------------------------------------


async def probe(api: httpx.AsyncClient, name: str, address: str) -> dict[str, Any]:
    answer = await api.post(f"/v1/providers/{name}/test", json={"address": address})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_a_probe_through_each_dingtalk_kind_reports_the_vendor_answer(api: httpx.AsyncClient) -> None:
    async with FakeDingTalk() as fake:
        await put_provider(api, "ding-robot", "dingtalk", "dingtalk_robot", robot_config(fake))
        await put_provider(api, "ding", "dingtalk", "dingtalk_work", work_config(fake))
        robot = await probe(api, "ding-robot", "anyone")
        work = await probe(api, "ding", "lisi")
        fake.fail_next_robot(310000, "keywords not in content")
        refused = await probe(api, "ding-robot", "anyone")
    assert (robot["ok"], robot["status"]) == (True, "delivered")
    assert fake.robot_posts[0]["markdown"]["text"] == "Clarion test message"
    [(task_id, task)] = fake.tasks.items()
    assert (work["ok"], work["provider_message_id"], task.userid) == (True, str(task_id), "lisi")
    assert refused["ok"] is False
    assert refused["error"]["code"] == "310000" and refused["error"]["misconfigured"] is True


async def test_a_probe_through_each_feishu_kind_reports_the_vendor_answer(api: httpx.AsyncClient) -> None:
    async with FakeFeishu() as fake:
        await put_provider(api, "lark-bot", "feishu", "feishu_bot", bot_config(fake))
        await put_provider(api, "lark", "feishu", "feishu_app", app_config(fake))
        bot = await probe(api, "lark-bot", "anyone")
        sent = await probe(api, "lark", OPEN_ID)
        fake.fail_next_send(230013, "Bot has NO availability to this user.")
        unreachable = await probe(api, "lark", OPEN_ID)
    assert (bot["ok"], bot["status"]) == (True, "delivered")
    assert (sent["ok"], sent["status"]) == (True, "sent")
    assert sent["provider_message_id"] in fake.messages
    assert unreachable["error"]["code"] == "230013"
    assert (unreachable["error"]["transient"], unreachable["error"]["dead_address"]) == (False, False)
