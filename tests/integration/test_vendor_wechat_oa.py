"""The WeChat Official Account provider against the fake WeChat API on loopback (tests/fakes/wechat.py)."""

from __future__ import annotations

import time
from typing import Any

import pydantic
import pytest

from clarion.channels import base, masking, vendor
from clarion.channels.wechat_oa import ERRCODES, WechatOaProvider
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.conftest import connect_redis, disconnect_redis
from tests.fakes import wechat
from tests.fakes.wechat import APP_ID, APP_SECRET, CALLBACK_TOKEN, ENCODING_AES_KEY, FakeWechat

CONTENT = {
    "template_id": "tpl_order_shipped",
    "fields": {"thing1": "订单 A-1001", "time2": "2026-12-02 08:00"},
    "url": "https://shop.example.com/orders/A-1001",
}


def provider(url: str, context: vendor.ProviderContext | None = None, **config: Any) -> WechatOaProvider:
    options = {
        "app_id": APP_ID,
        "app_secret": APP_SECRET,
        "endpoint": url,
        "allow_private_networks": True,
        "timeout": 5,
        "callback_token": CALLBACK_TOKEN,
        **config,
    }
    return WechatOaProvider(WechatOaProvider.Config(**options), name="wx", context=context)


def template_message(n: int, openid: str = "oFollower1", **content: Any) -> Outgoing:
    return Outgoing(
        delivery_id=f"dlv-{n}",
        message_id=f"msg-{n}",
        user_id=f"u{n}",
        channel=Channel.WECHAT,
        address=openid,
        content={**CONTENT, **content},
    )


async def test_a_template_message_is_sent_with_a_fetched_token_and_its_msgid_kept() -> None:
    async with FakeWechat() as fake:
        sender = provider(fake.url)
        mini = {"appid": "wxfedcba9876543210", "pagepath": "pages/order?id=A-1001"}
        [result] = await sender.send([template_message(1, miniprogram=mini)])
        await sender.close()

    assert result.error is None
    assert result.provider_message_id == str(fake.next_msgid)
    [token_request] = fake.token_requests
    assert token_request.query == {"grant_type": "client_credential", "appid": APP_ID, "secret": APP_SECRET}
    assert fake.sends == [
        {
            "touser": "oFollower1",
            "template_id": "tpl_order_shipped",
            "url": "https://shop.example.com/orders/A-1001",
            "miniprogram": mini,
            "data": {"thing1": {"value": "订单 A-1001"}, "time2": {"value": "2026-12-02 08:00"}},
            "client_msg_id": "dlv-1",
        }
    ]


async def test_the_stable_token_endpoint_is_used_when_configured() -> None:
    async with FakeWechat() as fake:
        sender = provider(fake.url, stable_token=True)
        [result] = await sender.send([template_message(1)])
        await sender.close()
    assert result.error is None
    [token_request] = fake.token_requests
    assert token_request.path == "/cgi-bin/stable_token"
    assert token_request.json() == {"grant_type": "client_credential", "appid": APP_ID, "secret": APP_SECRET}


async def test_one_token_serves_many_sends_fetched_once() -> None:
    async with FakeWechat() as fake:
        sender = provider(fake.url)
        results = await sender.send([template_message(n) for n in range(30)])
        results += await sender.send([template_message(n) for n in range(30, 40)])
        await sender.close()
    assert [r.error for r in results] == [None] * 40
    assert len(fake.token_requests) == 1 and sender.context.tokens.fetches == 1
    assert len(fake.sends) == 40


async def test_two_token_caches_share_one_token_through_redis() -> None:
    client = await connect_redis()
    try:
        async with FakeWechat() as fake:
            first = provider(fake.url, vendor.ProviderContext(vendor.TokenCache(client, prefix="t6:")))
            second = provider(fake.url, vendor.ProviderContext(vendor.TokenCache(client, prefix="t6:")))
            [a] = await first.send([template_message(1)])
            [b] = await second.send([template_message(2)])
            await first.close()
            await second.close()
    finally:
        await disconnect_redis(client)
    assert (a.error, b.error) == (None, None)
    assert len(fake.token_requests) == 1
    assert (first.context.tokens.fetches, second.context.tokens.fetches) == (1, 0)


async def test_an_expired_token_is_refreshed_once_and_the_send_made_again() -> None:
    async with FakeWechat() as fake:
        sender = provider(fake.url)
        [before] = await sender.send([template_message(1)])
        fake.expire()
        [after] = await sender.send([template_message(2)])
        await sender.close()
    assert (before.error, after.error) == (None, None)
    assert len(fake.token_requests) == 2
    assert [s["client_msg_id"] for s in fake.sends] == ["dlv-1", "dlv-2"]


async def test_a_token_refused_again_after_the_refresh_is_transient_not_a_loop() -> None:
    async with FakeWechat() as fake:
        fake.busy = [(40001, "invalid credential"), (40001, "invalid credential")]
        sender = provider(fake.url)
        [result] = await sender.send([template_message(1)])
        await sender.close()
    assert isinstance(result.error, TransientSendError)
    assert result.error.code == "40001" and "invalid credential" in result.error.message
    assert len(fake.token_requests) == 2 and fake.sends == []


@pytest.mark.parametrize(
    ("app_id", "secret", "errcode"),
    [
        ("wx0000000000000000", APP_SECRET, "40013"),
        (APP_ID, "wrong", "40125"),
        (APP_ID, APP_SECRET[::-1], "40001"),  # 40001 on the token endpoint: not a token problem
    ],
)
async def test_a_wrong_appid_or_secret_is_a_misconfigured_account(app_id: str, secret: str, errcode: str) -> None:
    async with FakeWechat() as fake:
        sender = provider(fake.url, app_id=app_id, app_secret=secret)
        [result] = await sender.send([template_message(1)])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == (errcode, True)
    assert fake.sends == []


ROWS = [(code, outcome) for code, outcome in ERRCODES.items() if outcome != "token"]


@pytest.mark.parametrize(("errcode", "outcome"), ROWS, ids=[str(code) for code, _ in ROWS])
async def test_each_wechat_errcode_maps_to_its_outcome(errcode: int, outcome: str) -> None:
    async with FakeWechat() as fake:
        fake.fail("oScripted", errcode, f"vendor says {errcode}")
        sender = provider(fake.url)
        [result] = await sender.send([template_message(1, openid="oScripted")])
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


async def test_an_unfollowed_openid_is_reported_dead_and_the_others_are_sent() -> None:
    async with FakeWechat() as fake:
        fake.fail("oGone", 43004, "require subscribe")
        sender = provider(fake.url)
        gone, kept = await sender.send([template_message(1, openid="oGone"), template_message(2)])
        await sender.close()
    assert isinstance(gone.error, PermanentSendError) and gone.error.dead_address
    assert not gone.error.misconfigured and "require subscribe" in gone.error.message
    assert kept.error is None and [s["touser"] for s in fake.sends] == ["oFollower1"]


async def test_an_unknown_errcode_is_permanent_with_its_message() -> None:
    async with FakeWechat() as fake:
        fake.fail("oOdd", 99999, "something new")
        sender = provider(fake.url)
        [result] = await sender.send([template_message(1, openid="oOdd")])
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == "99999"
    assert not result.error.misconfigured and "something new" in result.error.message


async def test_content_without_a_template_id_fails_before_calling_wechat() -> None:
    async with FakeWechat() as fake:
        sender = provider(fake.url)
        item = Outgoing("dlv-1", "msg-1", "u1", Channel.WECHAT, "oFollower1", {"title": "t", "body": "b"})
        [result] = await sender.send([item])
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == "invalid_content"
    assert fake.token_requests == [] and fake.sends == []


def test_the_config_names_a_bad_field_refuses_unknown_keys_and_masks_secrets() -> None:
    with pytest.raises(pydantic.ValidationError) as bad:
        WechatOaProvider.Config(app_id="gh_0123456789ab", app_secret="x")
    assert bad.value.errors()[0]["loc"] == ("app_id",)
    with pytest.raises(pydantic.ValidationError) as unknown:
        WechatOaProvider.Config(app_id=APP_ID, app_secret="x", appsecret="typo")
    assert unknown.value.errors()[0]["loc"] == ("appsecret",)
    config = {"app_id": APP_ID, "app_secret": APP_SECRET, "callback_token": CALLBACK_TOKEN}
    shown = masking.mask(WechatOaProvider.Config, config)
    assert shown == {"app_id": APP_ID, "app_secret": base.MASK, "callback_token": base.MASK}


# -- receipts ---------------------------------------------------------------------------------------------


def posted(body: bytes, **signing: Any) -> base.Callback:
    query, sent = wechat.callback(body, **signing)
    return base.Callback(body=sent, query=query, content_type="text/xml")


@pytest.mark.parametrize(
    ("status", "event"),
    [
        ("success", receipts.Event.DELIVERED),
        ("failed:user block", receipts.Event.UNDELIVERED),
        ("failed: system failed", receipts.Event.UNDELIVERED),
    ],
)
def test_a_signed_template_finished_event_becomes_a_receipt(status: str, event: receipts.Event) -> None:
    read = provider("http://127.0.0.1:9").receipts(posted(wechat.finished_event("200228333", status)))
    [receipt] = read.receipts
    assert (receipt.provider_message_id, receipt.event) == ("200228333", event)
    assert receipt.detail == {"vendor_status": status} and status in (receipt.reason or "")


@pytest.mark.parametrize("tamper", ["signature", "timestamp", "nonce"])
def test_a_callback_with_a_wrong_signature_is_refused(tamper: str) -> None:
    callback = posted(wechat.finished_event("1"))
    query = dict(callback.query)
    query[tamper] = "1" + query[tamper][1:] if query[tamper][0] != "1" else "2" + query[tamper][1:]
    with pytest.raises(base.RefusedCallback):
        provider("http://127.0.0.1:9").receipts(base.Callback(body=callback.body, query=query))


def test_a_callback_signed_with_another_token_or_too_old_is_refused() -> None:
    sender = provider("http://127.0.0.1:9")
    with pytest.raises(base.RefusedCallback):
        sender.receipts(posted(wechat.finished_event("1"), token="anotherToken"))
    with pytest.raises(base.RefusedCallback, match="timestamp"):
        sender.receipts(posted(wechat.finished_event("1"), timestamp=int(time.time()) - 3600))


def test_the_accounts_other_events_are_ignored_and_a_doctype_is_unreadable() -> None:
    sender = provider("http://127.0.0.1:9")
    subscribe = b"<xml><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>"
    assert sender.receipts(posted(subscribe)) == base.ReadCallback([], ignored=1)
    bomb = b'<!DOCTYPE xml [<!ENTITY a "aaaa">]><xml><MsgType>&a;</MsgType></xml>'
    with pytest.raises(base.UnreadableCallback):
        sender.receipts(posted(bomb))


def test_a_safe_mode_callback_is_verified_over_its_ciphertext_and_decrypted() -> None:
    sender = provider("http://127.0.0.1:9", encoding_aes_key=ENCODING_AES_KEY)
    callback = posted(wechat.finished_event("777", "failed:user block"), aes_key=ENCODING_AES_KEY)
    [receipt] = sender.receipts(callback).receipts
    assert (receipt.provider_message_id, receipt.event) == ("777", receipts.Event.UNDELIVERED)
    tampered = base.Callback(body=callback.body.replace(b"<Encrypt>", b"<Encrypt>A"), query=callback.query)
    with pytest.raises(base.RefusedCallback, match="msg_signature"):
        sender.receipts(tampered)


def test_the_url_check_echoes_echostr_only_when_signed() -> None:
    sender = provider("http://127.0.0.1:9")
    query, _ = wechat.callback(b"")
    assert sender.verify_url(base.Callback(body=b"", query={**query, "echostr": "4711echo"})) == "4711echo"
    with pytest.raises(base.RefusedCallback):
        sender.verify_url(base.Callback(body=b"", query={**query, "signature": "0" * 40, "echostr": "x"}))
    assert not provider("http://127.0.0.1:9", callback_token=None).takes_receipts


async def test_a_changed_app_secret_fetches_a_new_token_for_the_next_send() -> None:
    context = vendor.ProviderContext()  # the registry rebuilds an edited account with the process's context
    new_secret = "f" * len(APP_SECRET)
    async with FakeWechat() as fake:
        before = provider(fake.url, context)
        await before.send([template_message(1)])
        fake.app_secret = new_secret
        after = provider(fake.url, context, app_secret=new_secret)
        [result] = await after.send([template_message(2)])
        await before.close()
        await after.close()
    assert result.error is None, result.error
    last = [r for r in fake.server.requests if r.path == "/cgi-bin/message/template/send"][-1]
    assert fake.issued_with[last.query["access_token"]] == new_secret
    assert len(fake.token_requests) == 2
