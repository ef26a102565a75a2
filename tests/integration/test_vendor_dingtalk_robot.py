"""``dingtalk_robot`` against a fake DingTalk on loopback that recomputes the robot's sign."""

from __future__ import annotations

import time

import pytest

from clarion.channels import dingtalk_robot, masking
from clarion.channels.dingtalk_robot import DingTalkRobotProvider
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, DeliveryStatus, Outgoing
from tests.fakes.dingtalk import ROBOT_SECRET, ROBOT_TOKEN, FakeDingTalk, robot_sign


def robot(url: str, **config: object) -> DingTalkRobotProvider:
    options = {
        "access_token": ROBOT_TOKEN,
        "secret": ROBOT_SECRET,
        "endpoint": url + "/robot/send",
        "allow_private_networks": True,
        "timeout": 5,
        **config,
    }
    return DingTalkRobotProvider(DingTalkRobotProvider.Config(**options), name="robot")


def note(n: int = 1, *, title: str = "发布通知", markdown: str = "## 上线\n- 服务 **A** 已发布") -> Outgoing:
    return Outgoing(
        delivery_id=f"dlv-{n}",
        message_id=f"msg-{n}",
        user_id="u1",
        channel=Channel.DINGTALK,
        address="zhangsan",
        content={"title": title, "markdown": markdown},
    )


def test_the_sign_is_the_documented_hmac_of_timestamp_and_secret() -> None:
    assert dingtalk_robot.sign(ROBOT_SECRET, 1577262236757) == robot_sign(ROBOT_SECRET, "1577262236757")
    assert dingtalk_robot.sign(ROBOT_SECRET, 1577262236757) != dingtalk_robot.sign("SECother", 1577262236757)


async def test_a_signed_markdown_post_reaches_the_group_and_is_delivered() -> None:
    async with FakeDingTalk() as fake:
        sender = robot(fake.url, at_mobiles=["+86-13800138000"])
        [result] = await sender.send([note()])
        await sender.close()
    assert result.error is None, result.error
    assert (result.provider_message_id, result.status) == ("dlv-1", DeliveryStatus.DELIVERED)
    [request] = fake.requests
    assert request.query["access_token"] == ROBOT_TOKEN
    assert abs(int(request.query["timestamp"]) - time.time() * 1000) < 60_000
    assert fake.robot_posts == [
        {
            "msgtype": "markdown",
            "markdown": {"title": "发布通知", "text": "## 上线\n- 服务 **A** 已发布"},
            "at": {"atMobiles": ["+86-13800138000"], "atUserIds": [], "isAtAll": False},
        }
    ]


async def test_a_sign_from_the_wrong_secret_is_refused_as_misconfigured() -> None:
    async with FakeDingTalk() as fake:
        sender = robot(fake.url, secret="SEC-not-the-robot-s-secret")
        [result] = await sender.send([note()])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == ("310000", True)
    assert "sign not match" in result.error.message
    assert fake.robot_posts == []


async def test_a_clock_an_hour_off_is_refused_by_dingtalk() -> None:
    async with FakeDingTalk() as fake:
        sender = DingTalkRobotProvider(robot(fake.url).config, name="robot", clock=lambda: time.time() - 3700)
        [result] = await sender.send([note()])
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == "310000"
    assert "timestamp" in result.error.message


async def test_a_robot_without_a_secret_sends_no_sign() -> None:
    async with FakeDingTalk(robots={ROBOT_TOKEN: None}) as fake:
        sender = robot(fake.url, secret=None)
        [result] = await sender.send([note()])
        await sender.close()
    assert result.error is None
    assert set(fake.requests[0].query) == {"access_token"}


async def test_content_without_a_title_fails_before_any_request() -> None:
    async with FakeDingTalk() as fake:
        sender = robot(fake.url)
        [result] = await sender.send([note(title="")])
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == "invalid_content"
    assert fake.requests == []


@pytest.mark.parametrize(("errcode", "verdict"), sorted(dingtalk_robot.ERRORS.items()))
async def test_every_dingtalk_robot_errcode_maps_to_its_verdict(errcode: int, verdict: str) -> None:
    async with FakeDingTalk() as fake:
        fake.fail_next_robot(errcode, "vendor says no")
        sender = robot(fake.url)
        [result] = await sender.send([note()])
        await sender.close()
    error = result.error
    assert error is not None and error.code == str(errcode)  # type: ignore[attr-defined]
    assert "vendor says no" in error.message  # type: ignore[attr-defined]
    if verdict == "transient":
        assert isinstance(error, TransientSendError)
    else:
        assert isinstance(error, PermanentSendError)
        assert error.misconfigured is (verdict == "misconfigured")


async def test_sending_too_fast_waits_a_minute_and_an_unknown_code_is_permanent() -> None:
    async with FakeDingTalk() as fake:
        fake.fail_next_robot(130101, "send too fast, exceed 20 times per minute")
        fake.fail_next_robot(999999, "something new")
        sender = robot(fake.url)
        [too_fast] = await sender.send([note(1)])
        [unknown] = await sender.send([note(2)])
        await sender.close()
    assert isinstance(too_fast.error, TransientSendError) and too_fast.error.retry_after == 60
    assert isinstance(unknown.error, PermanentSendError) and not unknown.error.misconfigured
    assert unknown.error.code == "999999"


def test_the_config_masks_both_secrets_and_refuses_unknown_keys() -> None:
    shown = masking.mask(DingTalkRobotProvider.Config, {"access_token": ROBOT_TOKEN, "secret": ROBOT_SECRET})
    assert shown == {"access_token": masking.MASK, "secret": masking.MASK}
    with pytest.raises(ValueError, match="webhook"):
        DingTalkRobotProvider.Config(access_token="t", webhook="https://x")  # type: ignore[call-arg]
    assert DingTalkRobotProvider.default_rate == (None, 20)
