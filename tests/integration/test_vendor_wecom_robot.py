"""The WeCom group robot provider against the fake WeCom webhook on loopback (tests/fakes/wecom.py)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from clarion.channels import base, masking
from clarion.channels.wecom_robot import ERRCODES, WecomRobotProvider
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, DeliveryStatus, Outgoing
from tests.fakes.wecom import ROBOT_KEY, FakeWecom


def robot(**config: Any) -> WecomRobotProvider:
    options = {"allow_private_networks": True, "timeout": 5, **config}
    return WecomRobotProvider(WecomRobotProvider.Config(**options), name="ops-group")


def post(n: int, content: dict[str, Any] | None = None, address: str = "ops group") -> Outgoing:
    return Outgoing(f"dlv-{n}", f"msg-{n}", f"u{n}", Channel.WECOM, address, content or {"markdown": "**告警** 磁盘满"})


@pytest.mark.parametrize("configured", ["webhook_url", "key"])
async def test_a_markdown_post_reaches_the_group_with_the_key(configured: str) -> None:
    async with FakeWecom() as fake:
        config = (
            {"webhook_url": fake.robot_url} if configured == "webhook_url" else {"key": ROBOT_KEY, "endpoint": fake.url}
        )
        sender = robot(**config)
        [result] = await sender.send([post(1)])
        await sender.close()
    assert result.error is None
    assert (result.provider_message_id, result.status) == ("dlv-1", DeliveryStatus.DELIVERED)
    [request] = fake.robot_requests
    assert request.query == {"key": ROBOT_KEY}
    assert fake.posts == [{"msgtype": "markdown", "markdown": {"content": "**告警** 磁盘满"}}]


async def test_a_text_post_carries_its_mentions_and_ignores_the_address() -> None:
    async with FakeWecom() as fake:
        sender = robot(webhook_url=fake.robot_url)
        content = {"text": "请处理", "mentioned_list": ["wangqing", "@all"], "mentioned_mobile_list": ["13800001111"]}
        [result] = await sender.send([post(1, content, address="anything at all")])
        await sender.close()
    assert result.error is None
    assert fake.posts == [
        {
            "msgtype": "text",
            "text": {
                "content": "请处理",
                "mentioned_list": ["wangqing", "@all"],
                "mentioned_mobile_list": ["13800001111"],
            },
        }
    ]


async def test_a_wrong_key_is_a_misconfigured_account() -> None:
    async with FakeWecom() as fake:
        sender = robot(key="not-the-key", endpoint=fake.url)
        [result] = await sender.send([post(1)])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == ("93000", True)
    assert "invalid webhook url" in result.error.message and fake.posts == []


ROWS = list(ERRCODES.items())


@pytest.mark.parametrize(("errcode", "outcome"), ROWS, ids=[str(code) for code, _ in ROWS])
async def test_each_robot_errcode_maps_to_its_outcome(errcode: int, outcome: str) -> None:
    async with FakeWecom() as fake:
        fake.robot_busy = [(errcode, f"vendor says {errcode}")]
        sender = robot(webhook_url=fake.robot_url)
        [result] = await sender.send([post(1)])
        await sender.close()
    error = result.error
    assert error is not None and error.code == str(errcode)  # type: ignore[attr-defined]
    assert f"vendor says {errcode}" in error.message  # type: ignore[attr-defined]
    if outcome == "transient":
        assert isinstance(error, TransientSendError)
        assert error.retry_after == (60 if errcode == 45009 else None)
    else:
        assert isinstance(error, PermanentSendError)
        assert error.misconfigured == (outcome == "misconfigured") and not error.dead_address


async def test_content_without_markdown_or_text_is_not_posted() -> None:
    async with FakeWecom() as fake:
        sender = robot(webhook_url=fake.robot_url)
        [result] = await sender.send([post(1, {"title": "only a title"})])
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == "invalid_content"
    assert fake.robot_requests == []


def test_the_default_rate_is_20_a_minute() -> None:
    assert WecomRobotProvider.default_rate == (None, 20)


def test_the_config_takes_a_url_or_a_key_and_masks_the_key() -> None:
    with pytest.raises(pydantic.ValidationError, match="webhook_url or its key"):
        WecomRobotProvider.Config()
    with pytest.raises(pydantic.ValidationError) as no_key:
        WecomRobotProvider.Config(webhook_url="https://qyapi.weixin.qq.com/cgi-bin/webhook/send")
    assert no_key.value.errors()[0]["loc"] == ("webhook_url",)
    url = f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={ROBOT_KEY}"
    shown = masking.mask(WecomRobotProvider.Config, {"webhook_url": url})
    assert ROBOT_KEY not in str(shown) and shown["webhook_url"].startswith("https://qyapi.weixin.qq.com/")
    assert masking.mask(WecomRobotProvider.Config, {"key": ROBOT_KEY}) == {"key": base.MASK}
