"""``feishu_app`` against a fake Feishu on loopback that issues and checks tenant tokens, and its event
callbacks signed (and encrypted) the way Feishu's event subscription signs them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from clarion.channels import base, feishu_app, masking, vendor
from clarion.channels.feishu_app import FeishuAppProvider
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.fakes.feishu import (
    APP_ID,
    APP_SECRET,
    ENCRYPT_KEY,
    VERIFICATION_TOKEN,
    FakeFeishu,
    event,
    read_event,
)

OPEN_ID = "ou_7d8a6e6df7621556ce0d21922b676706ccs"


def app(url: str = "https://open.feishu.cn", context: vendor.ProviderContext | None = None, **config: Any) -> Any:
    options = {
        "app_id": APP_ID,
        "app_secret": APP_SECRET,
        "endpoint": url,
        "allow_private_networks": True,
        "timeout": 5,
        "verification_token": VERIFICATION_TOKEN,
        "encrypt_key": ENCRYPT_KEY,
        **config,
    }
    return FeishuAppProvider(FeishuAppProvider.Config(**options), name="lark", context=context)


def message(n: int = 1, open_id: str = OPEN_ID) -> Outgoing:
    return Outgoing(
        delivery_id=f"dlv-{n}",
        message_id=f"msg-{n}",
        user_id=f"u{n}",
        channel=Channel.FEISHU,
        address=open_id,
        content={"title": "工单更新", "markdown": "工单 **#7** 已关闭"},
    )


def callback(request: dict[str, Any]) -> base.Callback:
    headers = {k.lower(): v for k, v in request["headers"].items()}
    return base.Callback(body=request["content"], headers=headers, content_type="application/json")


async def test_a_message_goes_to_the_open_id_as_a_card_with_a_bearer_token() -> None:
    async with FakeFeishu() as fake:
        sender = app(fake.url)
        [result] = await sender.send([message()])
        await sender.close()
    assert result.error is None, result.error
    [(message_id, (open_id, card))] = fake.messages.items()
    assert (result.provider_message_id, open_id) == (message_id, OPEN_ID)
    assert card["elements"] == [{"tag": "markdown", "content": "工单 **#7** 已关闭"}]
    assert card["header"]["title"]["content"] == "工单更新"
    token, send = fake.requests
    assert token.json() == {"app_id": APP_ID, "app_secret": APP_SECRET}
    assert send.query == {"receive_id_type": "open_id"}
    assert send.headers["Authorization"].removeprefix("Bearer ") in fake.tokens
    body = send.json()
    assert (body["receive_id"], body["msg_type"], body["uuid"]) == (OPEN_ID, "interactive", "dlv-1")
    assert isinstance(body["content"], str) and orjson.loads(body["content"]) == card


async def test_the_tenant_token_is_fetched_once_for_many_sends() -> None:
    context = vendor.ProviderContext()
    async with FakeFeishu() as fake:
        sender = app(fake.url, context)
        results = await sender.send([message(n) for n in range(1, 6)])
        await sender.close()
    assert [r.error for r in results] == [None] * 5
    assert fake.tokens_issued == 1 and len(fake.messages) == 5


async def test_an_expired_tenant_token_is_refreshed_once_and_the_send_made_again() -> None:
    async with FakeFeishu() as fake:
        sender = app(fake.url)
        await sender.send([message(1)])
        fake.expire_tokens()
        [result] = await sender.send([message(2)])
        await sender.close()
    assert result.error is None, result.error
    assert fake.tokens_issued == 2 and len(fake.messages) == 2
    sends = [r for r in fake.requests if r.path == "/open-apis/im/v1/messages"]
    assert len(sends) == 3
    assert sends[1].headers["Authorization"] != sends[2].headers["Authorization"]


@pytest.mark.parametrize("code", sorted(feishu_app.TOKEN_CODES))
async def test_a_token_refused_twice_fails_with_feishu_s_code(code: int) -> None:
    async with FakeFeishu() as fake:
        fake.fail_next_send(code, "token refused")
        fake.fail_next_send(code, "token refused")
        sender = app(fake.url)
        [result] = await sender.send([message()])
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == str(code)
    assert fake.tokens_issued == 2 and fake.messages == {}


async def test_a_wrong_app_secret_is_misconfigured() -> None:
    async with FakeFeishu() as fake:
        sender = app(fake.url, app_secret="not-the-secret")
        [result] = await sender.send([message()])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == ("10014", True)


@pytest.mark.parametrize(("code", "verdict"), sorted(feishu_app.ERRORS.items()))
async def test_every_feishu_app_code_maps_to_its_verdict(code: int, verdict: str) -> None:
    async with FakeFeishu() as fake:
        fake.fail_next_send(code, "vendor says no")
        sender = app(fake.url)
        [result] = await sender.send([message()])
        await sender.close()
    error = result.error
    assert error is not None and error.code == str(code)  # type: ignore[attr-defined]
    assert "vendor says no" in error.message  # type: ignore[attr-defined]
    if verdict == "transient":
        assert isinstance(error, TransientSendError)
    else:
        assert isinstance(error, PermanentSendError)
        assert error.misconfigured is (verdict == "misconfigured") and not error.dead_address


async def test_an_http_429_without_a_code_is_transient() -> None:
    from tests.integration.loopback import LoopbackServer, Reply

    async with LoopbackServer(Reply(200, {"code": 0, "tenant_access_token": "t-1", "expire": 7200}), Reply(429)) as s:
        sender = app(s.url)
        [result] = await sender.send([message()])
        await sender.close()
    assert isinstance(result.error, TransientSendError) and result.error.code == "http_429"


# -- events --------------------------------------------------------------------------------------------------


def test_a_signed_read_event_gives_a_read_receipt_per_message() -> None:
    provider = app()
    read = provider.receipts(callback(event(read_event(["om_1", "om_2"]))))
    assert [(r.provider_message_id, r.event) for r in read.receipts] == [
        ("om_1", receipts.Event.READ),
        ("om_2", receipts.Event.READ),
    ]
    assert read.receipts[0].detail["vendor_status"] == "read" and read.ignored == 0


def test_an_encrypted_read_event_is_decrypted() -> None:
    read = app().receipts(callback(event(read_event(["om_3"]), encrypted=True)))
    assert [r.provider_message_id for r in read.receipts] == ["om_3"]


def test_a_wrong_signature_or_token_is_refused() -> None:
    provider = app()
    forged = event(read_event(["om_1"]), encrypt_key="not-the-key")
    with pytest.raises(base.RefusedCallback, match="X-Lark-Signature"):
        provider.receipts(callback(forged))
    unsigned = event(read_event(["om_1"]), encrypt_key=None)
    with pytest.raises(base.RefusedCallback):
        provider.receipts(callback(unsigned))
    wrong_token = event(read_event(["om_1"], token="not-the-token"))
    with pytest.raises(base.RefusedCallback, match="verification token"):
        provider.receipts(callback(wrong_token))


def test_without_an_encrypt_key_the_verification_token_proves_the_event() -> None:
    provider = app(encrypt_key=None)
    read = provider.receipts(callback(event(read_event(["om_9"]), encrypt_key=None)))
    assert [r.provider_message_id for r in read.receipts] == ["om_9"]
    with pytest.raises(base.RefusedCallback):
        provider.receipts(callback(event(read_event(["om_9"], token="forged"), encrypt_key=None)))
    assert app(encrypt_key=None, verification_token=None).takes_receipts is False


def test_other_events_are_ignored_and_a_read_event_without_ids_is_unreadable() -> None:
    provider = app()
    other = read_event(["om_1"])
    other["header"]["event_type"] = "im.message.receive_v1"
    assert provider.receipts(callback(event(other))) == base.ReadCallback([], ignored=1)
    empty = read_event([])
    del empty["event"]["message_id_list"]
    with pytest.raises(base.UnreadableCallback):
        provider.receipts(callback(event(empty)))


def test_the_url_verification_challenge_is_answered_when_it_proves_itself() -> None:
    provider = app()
    check = {"challenge": "ajls384kdjx98XX", "token": VERIFICATION_TOKEN, "type": "url_verification"}
    assert provider.challenge(callback(event(check, encrypt_key=None))) == {"challenge": "ajls384kdjx98XX"}
    assert provider.challenge(callback(event(check, encrypted=True))) == {"challenge": "ajls384kdjx98XX"}
    with pytest.raises(base.RefusedCallback):
        provider.challenge(callback(event({**check, "token": "forged"}, encrypt_key=None)))
    assert provider.challenge(callback(event(read_event(["om_1"])))) is None
    only_key = app(verification_token=None)
    assert only_key.challenge(callback(event(check, encrypted=True))) == {"challenge": "ajls384kdjx98XX"}
    with pytest.raises(base.RefusedCallback):
        only_key.challenge(callback(event(check, encrypt_key=None)))


def test_the_secrets_are_masked() -> None:
    config = {"app_id": APP_ID, "app_secret": APP_SECRET, "verification_token": "v", "encrypt_key": "k"}
    shown = masking.mask(FeishuAppProvider.Config, config)
    assert shown == {
        "app_id": APP_ID,
        "app_secret": masking.MASK,
        "verification_token": masking.MASK,
        "encrypt_key": masking.MASK,
    }
    assert FeishuAppProvider.default_rate == (50, 1000)


async def test_two_processes_sharing_redis_fetch_the_tenant_token_once() -> None:
    from tests.conftest import connect_redis, disconnect_redis

    redis = await connect_redis()
    try:
        one, two = (vendor.ProviderContext(vendor.TokenCache(redis, prefix="clarion-test:")) for _ in range(2))
        async with FakeFeishu() as fake:
            first, second = app(fake.url, one), app(fake.url, two)
            [a] = await first.send([message(1)])
            [b] = await second.send([message(2)])
            await first.close()
            await second.close()
    finally:
        await disconnect_redis(redis)
    assert (a.error, b.error) == (None, None)
    assert fake.tokens_issued == 1
    assert (one.tokens.fetches, two.tokens.fetches) == (1, 0)


async def test_a_changed_app_secret_fetches_a_new_tenant_token_for_the_next_send() -> None:
    context = vendor.ProviderContext()  # the registry rebuilds an edited account with the process's context
    new_secret = "feishu-app-secret-rotated-0000"
    async with FakeFeishu() as fake:
        before = app(fake.url, context)
        await before.send([message(1)])
        fake.apps[APP_ID] = new_secret
        after = app(fake.url, context, app_secret=new_secret)
        [result] = await after.send([message(2)])
        typo = app(fake.url, context, app_secret="not-the-new-secret")
        [refused] = await typo.send([message(3)])
        for sender in (before, after, typo):
            await sender.close()
    assert result.error is None, result.error
    last = [r for r in fake.requests if r.path == "/open-apis/im/v1/messages"][-1]
    assert fake.issued_with[last.headers["Authorization"].removeprefix("Bearer ")] == new_secret
    assert fake.tokens_issued == 2 and context.tokens.fetches == 2
    # a wrong new secret is found at once, not hidden behind a token the old one got
    assert isinstance(refused.error, PermanentSendError) and refused.error.code == "10014"
    assert len(fake.messages) == 2
