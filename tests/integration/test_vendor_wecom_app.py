"""The WeCom application provider against the fake WeCom API on loopback (tests/fakes/wecom.py)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from clarion.channels import base, masking, vendor
from clarion.channels.wecom_app import ERRCODES, WecomAppProvider
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.conftest import connect_redis, disconnect_redis
from tests.fakes.wecom import AGENT_ID, CORP_ID, CORP_SECRET, FakeWecom

MARKDOWN = {"title": "订单已发货", "markdown": "### 订单已发货\n\n订单 **A-1001** 已发货"}


def provider(url: str, context: vendor.ProviderContext | None = None, **config: Any) -> WecomAppProvider:
    options = {
        "corp_id": CORP_ID,
        "corp_secret": CORP_SECRET,
        "agent_id": AGENT_ID,
        "endpoint": url,
        "allow_private_networks": True,
        "timeout": 5,
        **config,
    }
    return WecomAppProvider(WecomAppProvider.Config(**options), name="wecom", context=context)


def app_message(n: int, userid: str = "zhangsan", content: dict[str, Any] | None = None) -> Outgoing:
    return Outgoing(f"dlv-{n}", f"msg-{n}", f"u{n}", Channel.WECOM, userid, content or MARKDOWN)


async def test_a_markdown_message_is_sent_to_the_userid_with_a_fetched_token() -> None:
    async with FakeWecom() as fake:
        sender = provider(fake.url)
        [result] = await sender.send([app_message(1)])
        await sender.close()
    assert result.error is None and result.provider_message_id == "msg1"
    [token_request] = fake.token_requests
    assert token_request.query == {"corpid": CORP_ID, "corpsecret": CORP_SECRET}
    assert fake.sends == [
        {
            "touser": "zhangsan",
            "agentid": AGENT_ID,
            "msgtype": "markdown",
            "markdown": {"content": MARKDOWN["markdown"]},
            "safe": 0,
        }
    ]


@pytest.mark.parametrize(
    ("content", "config", "expected"),
    [
        ({"text": "纯文本"}, {}, {"msgtype": "text", "text": {"content": "纯文本"}}),
        (MARKDOWN, {"markdown_as": "text"}, {"msgtype": "text", "text": {"content": MARKDOWN["markdown"]}}),
        (
            {"title": "审批", "description": "<div>请审批</div>", "url": "https://oa.example.com/1", "btntxt": "详情"},
            {"safe": True},
            {
                "msgtype": "textcard",
                "textcard": {
                    "title": "审批",
                    "description": "<div>请审批</div>",
                    "url": "https://oa.example.com/1",
                    "btntxt": "详情",
                },
                "safe": 1,
            },
        ),
    ],
    ids=["text", "markdown-as-text", "textcard"],
)
async def test_the_message_type_follows_the_content(
    content: dict[str, Any], config: dict[str, Any], expected: dict[str, Any]
) -> None:
    async with FakeWecom() as fake:
        sender = provider(fake.url, **config)
        [result] = await sender.send([app_message(1, content=content)])
        await sender.close()
    assert result.error is None
    [sent] = fake.sends
    assert {k: v for k, v in sent.items() if k in expected} == expected


async def test_a_textcard_without_a_url_fails_before_calling_wecom() -> None:
    async with FakeWecom() as fake:
        sender = provider(fake.url)
        [result] = await sender.send([app_message(1, content={"title": "t", "description": "d"})])
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == "invalid_content"
    assert fake.token_requests == []


async def test_one_token_serves_many_sends_fetched_once() -> None:
    async with FakeWecom() as fake:
        sender = provider(fake.url)
        results = await sender.send([app_message(n) for n in range(25)])
        await sender.close()
    assert [r.error for r in results] == [None] * 25
    assert len(fake.token_requests) == 1 and len(fake.sends) == 25


async def test_two_token_caches_share_one_token_through_redis() -> None:
    client = await connect_redis()
    try:
        async with FakeWecom() as fake:
            first = provider(fake.url, vendor.ProviderContext(vendor.TokenCache(client, prefix="t6:")))
            second = provider(fake.url, vendor.ProviderContext(vendor.TokenCache(client, prefix="t6:")))
            [a] = await first.send([app_message(1)])
            [b] = await second.send([app_message(2)])
            await first.close()
            await second.close()
    finally:
        await disconnect_redis(client)
    assert (a.error, b.error) == (None, None)
    assert len(fake.token_requests) == 1 and second.context.tokens.fetches == 0


async def test_an_expired_token_is_refreshed_once_and_the_send_made_again() -> None:
    async with FakeWecom() as fake:
        sender = provider(fake.url)
        await sender.send([app_message(1)])
        fake.expire()
        [result] = await sender.send([app_message(2)])
        await sender.close()
    assert result.error is None
    assert len(fake.token_requests) == 2 and len(fake.sends) == 2


async def test_a_token_refused_again_after_the_refresh_is_transient() -> None:
    async with FakeWecom() as fake:
        fake.busy = [(42001, "access_token expired"), (40014, "invalid access_token")]
        sender = provider(fake.url)
        [result] = await sender.send([app_message(1)])
        await sender.close()
    assert isinstance(result.error, TransientSendError) and result.error.code == "40014"
    assert len(fake.token_requests) == 2


@pytest.mark.parametrize(
    ("config", "errcode"),
    [({"corp_secret": "wrong"}, "40001"), ({"corp_id": "ww0000000000000000"}, "40013"), ({"agent_id": 7}, "301002")],
)
async def test_wrong_credentials_are_a_misconfigured_account(config: dict[str, Any], errcode: str) -> None:
    async with FakeWecom() as fake:
        sender = provider(fake.url, **config)
        [result] = await sender.send([app_message(1)])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == (errcode, True)
    assert fake.sends == []


ROWS = [(code, outcome) for code, outcome in ERRCODES.items() if outcome != "token"]


@pytest.mark.parametrize(("errcode", "outcome"), ROWS, ids=[str(code) for code, _ in ROWS])
async def test_each_wecom_errcode_maps_to_its_outcome(errcode: int, outcome: str) -> None:
    async with FakeWecom() as fake:
        fake.fail("lisi", errcode, f"vendor says {errcode}")
        sender = provider(fake.url)
        [result] = await sender.send([app_message(1, userid="lisi")])
        await sender.close()
    error = result.error
    assert error is not None and error.code == str(errcode)  # type: ignore[attr-defined]
    assert f"vendor says {errcode}" in error.message  # type: ignore[attr-defined]
    if outcome == "transient":
        assert isinstance(error, TransientSendError)
    else:
        assert isinstance(error, PermanentSendError)
        assert error.misconfigured == (outcome == "misconfigured")
        assert error.dead_address == (outcome == "dead_address")


async def test_an_unknown_userid_is_a_dead_address_the_others_are_sent() -> None:
    async with FakeWecom() as fake:
        sender = provider(fake.url)
        gone, kept = await sender.send([app_message(1, userid="left-the-company"), app_message(2)])
        await sender.close()
    assert isinstance(gone.error, PermanentSendError)
    assert (gone.error.code, gone.error.dead_address) == ("81013", True)
    assert kept.error is None and [s["touser"] for s in fake.sends] == ["zhangsan"]


async def test_a_userid_listed_in_invaliduser_with_errcode_0_is_a_dead_address() -> None:
    async with FakeWecom() as fake:
        fake.dropped.add("ghost")
        sender = provider(fake.url)
        [result] = await sender.send([app_message(1, userid="ghost")])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.dead_address, result.error.misconfigured) == ("invaliduser", True, False)


def test_the_config_names_a_bad_field_and_masks_the_secret() -> None:
    with pytest.raises(pydantic.ValidationError) as bad:
        WecomAppProvider.Config(corp_id=CORP_ID, corp_secret="x", agent_id=0)
    assert bad.value.errors()[0]["loc"] == ("agent_id",)
    with pytest.raises(pydantic.ValidationError) as unknown:
        WecomAppProvider.Config(corp_id=CORP_ID, corp_secret="x", agent_id=1, agentid=1)
    assert unknown.value.errors()[0]["loc"] == ("agentid",)
    shown = masking.mask(WecomAppProvider.Config, {"corp_id": CORP_ID, "corp_secret": CORP_SECRET, "agent_id": 1})
    assert shown == {"corp_id": CORP_ID, "corp_secret": base.MASK, "agent_id": 1}


def test_wecom_app_takes_no_receipts() -> None:
    assert not isinstance(provider("http://127.0.0.1:9"), base.TakesReceipts)


async def test_a_changed_corp_secret_fetches_a_new_token_for_the_next_send() -> None:
    context = vendor.ProviderContext()  # the registry rebuilds an edited account with the process's context
    new_secret = "wecom-corp-secret-rotated"
    async with FakeWecom() as fake:
        before = provider(fake.url, context)
        await before.send([app_message(1)])
        fake.corp_secret = new_secret
        after = provider(fake.url, context, corp_secret=new_secret)
        [result] = await after.send([app_message(2)])
        await before.close()
        await after.close()
    assert result.error is None, result.error
    last = [r for r in fake.server.requests if r.path == "/cgi-bin/message/send"][-1]
    assert fake.issued_with[last.query["access_token"]] == new_secret
    assert len(fake.token_requests) == 2
