"""``feishu_bot`` against a fake Feishu on loopback that recomputes the custom bot's sign."""

from __future__ import annotations

import time

import pytest

from clarion.channels import feishu_bot, masking
from clarion.channels.feishu_bot import FeishuBotProvider
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, DeliveryStatus, Outgoing
from tests.fakes.feishu import BOT_SECRET, BOT_TOKEN, FakeFeishu, bot_sign


def bot(url: str, **config: object) -> FeishuBotProvider:
    options = {
        "token": BOT_TOKEN,
        "secret": BOT_SECRET,
        "endpoint": url + "/open-apis/bot/v2/hook",
        "allow_private_networks": True,
        "timeout": 5,
        **config,
    }
    return FeishuBotProvider(FeishuBotProvider.Config(**options), name="bot")


def post(n: int = 1, *, title: str | None = "构建失败", markdown: str = "**main** 分支构建失败") -> Outgoing:
    content = {"markdown": markdown} if title is None else {"title": title, "markdown": markdown}
    return Outgoing(
        delivery_id=f"dlv-{n}",
        message_id=f"msg-{n}",
        user_id="u1",
        channel=Channel.FEISHU,
        address="ou_anyone",
        content=content,
    )


def test_the_sign_keys_the_hmac_with_timestamp_and_secret_over_nothing() -> None:
    assert feishu_bot.sign(BOT_SECRET, 1599360473) == bot_sign(BOT_SECRET, "1599360473")
    assert feishu_bot.sign(BOT_SECRET, 1599360473) != feishu_bot.sign(BOT_SECRET, 1599360474)


async def test_a_signed_card_reaches_the_group_and_is_delivered() -> None:
    async with FakeFeishu() as fake:
        sender = bot(fake.url)
        [result] = await sender.send([post()])
        await sender.close()
    assert result.error is None, result.error
    assert (result.provider_message_id, result.status) == ("dlv-1", DeliveryStatus.DELIVERED)
    [request] = fake.requests
    assert request.path == f"/open-apis/bot/v2/hook/{BOT_TOKEN}"
    [body] = fake.bot_posts
    assert abs(int(body["timestamp"]) - time.time()) < 60
    assert body["sign"] == bot_sign(BOT_SECRET, body["timestamp"])
    assert body["msg_type"] == "interactive"
    assert body["card"] == {
        "config": {"wide_screen_mode": True},
        "header": {"title": {"tag": "plain_text", "content": "构建失败"}},
        "elements": [{"tag": "markdown", "content": "**main** 分支构建失败"}],
    }


async def test_a_card_without_a_title_has_no_header_and_text_mode_sends_text() -> None:
    async with FakeFeishu() as fake:
        as_card, as_text = bot(fake.url), bot(fake.url, message_type="text")
        await as_card.send([post(1, title=None)])
        await as_text.send([post(2)])
        await as_card.close()
        await as_text.close()
    card_post, text_post = fake.bot_posts
    assert "header" not in card_post["card"]
    assert (text_post["msg_type"], text_post["content"]) == ("text", {"text": "构建失败\n**main** 分支构建失败"})


async def test_a_sign_from_the_wrong_secret_is_refused_as_misconfigured() -> None:
    async with FakeFeishu() as fake:
        sender = bot(fake.url, secret="not-the-bot-secret")
        [result] = await sender.send([post()])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == ("19021", True)
    assert "sign match fail" in result.error.message
    assert fake.bot_posts == []


async def test_a_clock_an_hour_off_is_refused_by_feishu() -> None:
    async with FakeFeishu() as fake:
        sender = FeishuBotProvider(bot(fake.url).config, name="bot", clock=lambda: time.time() + 3700)
        [result] = await sender.send([post()])
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == "19021"


async def test_an_unknown_webhook_token_answered_with_http_400_is_misconfigured() -> None:
    async with FakeFeishu() as fake:
        sender = bot(fake.url, token="removed-bot")
        [result] = await sender.send([post()])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == ("19001", True)


async def test_a_bot_without_a_secret_sends_no_sign() -> None:
    async with FakeFeishu(bots={BOT_TOKEN: None}) as fake:
        sender = bot(fake.url, secret=None)
        [result] = await sender.send([post()])
        await sender.close()
    assert result.error is None
    assert "sign" not in fake.bot_posts[0] and "timestamp" not in fake.bot_posts[0]


@pytest.mark.parametrize(("code", "verdict"), sorted(feishu_bot.ERRORS.items()))
async def test_every_feishu_bot_code_maps_to_its_verdict(code: int, verdict: str) -> None:
    async with FakeFeishu() as fake:
        fake.fail_next_bot(code, "vendor says no")
        sender = bot(fake.url)
        [result] = await sender.send([post()])
        await sender.close()
    error = result.error
    assert error is not None and error.code == str(code)  # type: ignore[attr-defined]
    assert "vendor says no" in error.message  # type: ignore[attr-defined]
    if verdict == "transient":
        assert isinstance(error, TransientSendError) and error.retry_after == 1.0
    else:
        assert isinstance(error, PermanentSendError)
        assert error.misconfigured is (verdict == "misconfigured")


async def test_content_without_markdown_fails_before_any_request() -> None:
    async with FakeFeishu() as fake:
        sender = bot(fake.url)
        [result] = await sender.send([post(markdown="")])
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == "invalid_content"
    assert fake.requests == []


def test_the_config_masks_token_and_secret_and_checks_the_token() -> None:
    shown = masking.mask(FeishuBotProvider.Config, {"token": BOT_TOKEN, "secret": BOT_SECRET})
    assert shown == {"token": masking.MASK, "secret": masking.MASK}
    with pytest.raises(ValueError, match="token"):
        FeishuBotProvider.Config(token="../../im/v1/messages")
    assert FeishuBotProvider.default_rate == (5, 100)
