"""The Aliyun voice provider against the fake Dyvmsapi on loopback (tests/fakes/aliyun_voice.py): real RPC
signing, the request body, each error code, and call-result receipts by push and by polling."""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
import pytest

from clarion.channels import aliyun_rpc, base, masking
from clarion.channels.aliyun_voice import CODES, AliyunVoiceProvider
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.fakes.aliyun_voice import (
    ACCESS_KEY_ID,
    ACCESS_KEY_SECRET,
    SHOW_NUMBER,
    TEMPLATE,
    FakeAliyunVoice,
    voice_report,
)
from tests.integration.loopback import LoopbackServer, Reply

TOKEN = "voice-report-token-0123456789"
CONTENT = {
    "text": "您的验证码是 4711",
    "vendor_template": {"*": {"code": TEMPLATE, "params": {"code": "4711", "product": "Clarion 告警"}}},
}


def provider(url: str, **config: Any) -> AliyunVoiceProvider:
    options = {
        "access_key_id": ACCESS_KEY_ID,
        "access_key_secret": ACCESS_KEY_SECRET,
        "called_show_number": SHOW_NUMBER,
        "endpoint": url,
        "allow_private_networks": True,
        "timeout": 5,
        "receipt_token": TOKEN,
        **config,
    }
    return AliyunVoiceProvider(AliyunVoiceProvider.Config(**options), name="ali-voice")


def call(n: int, phone: str = "+8613800138000", **content: Any) -> Outgoing:
    return Outgoing(f"dlv-{n}", f"msg-{n}", f"u{n}", Channel.VOICE, phone, {**CONTENT, **content})


async def test_a_call_is_placed_signed_with_the_template_its_params_and_the_callid_kept() -> None:
    async with FakeAliyunVoice() as fake:
        sender = provider(fake.url, play_times=2)
        [result] = await sender.send([call(1)])
        await sender.close()
    assert result.error is None
    [placed] = fake.calls
    assert result.provider_message_id == placed.call_id and "^" in placed.call_id
    form = placed.params
    assert (form["Action"], form["Version"], form["AccessKeyId"]) == ("SingleCallByTts", "2017-05-25", ACCESS_KEY_ID)
    assert form["CalledNumber"] == "13800138000"  # a mainland number goes without +86
    assert (form["CalledShowNumber"], form["TtsCode"], form["OutId"], form["PlayTimes"]) == (
        SHOW_NUMBER,
        TEMPLATE,
        "dlv-1",
        "2",
    )
    assert placed.tts_param == {"code": "4711", "product": "Clarion 告警"}


async def test_an_international_number_is_sent_as_country_code_and_number() -> None:
    async with FakeAliyunVoice() as fake:
        sender = provider(fake.url, called_show_number=None)
        [result] = await sender.send([call(1, phone="+85291234567")])
        await sender.close()
    assert result.error is None
    assert fake.calls[0].params["CalledNumber"] == "85291234567"
    assert "CalledShowNumber" not in fake.calls[0].params  # a template in Aliyun's public-number mode


async def test_the_accounts_own_template_wins_over_the_template_for_every_account() -> None:
    async with FakeAliyunVoice() as fake:
        fake.templates.add("TTS_OWN")
        sender = provider(fake.url)
        own = {"*": {"code": TEMPLATE}, "ali-voice": {"code": "TTS_OWN", "params": {"n": "1"}}}
        [result] = await sender.send([call(1, vendor_template=own)])
        await sender.close()
    assert result.error is None
    assert (fake.calls[0].params["TtsCode"], fake.calls[0].tts_param) == ("TTS_OWN", {"n": "1"})


async def test_a_wrong_access_key_secret_is_refused_by_the_signature_check_as_misconfigured() -> None:
    async with FakeAliyunVoice() as fake:
        sender = provider(fake.url, access_key_secret="not-the-secret")
        [result] = await sender.send([call(1)])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == ("SignatureDoesNotMatch", True)
    assert "not matched" in result.error.message and fake.calls == []


async def test_an_unknown_access_key_id_is_a_misconfigured_account() -> None:
    async with FakeAliyunVoice() as fake:
        sender = provider(fake.url, access_key_id="LTAI-unknown")
        [result] = await sender.send([call(1)])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == ("InvalidAccessKeyId.NotFound", True)


async def test_a_template_not_registered_at_aliyun_is_a_misconfigured_account() -> None:
    async with FakeAliyunVoice() as fake:
        sender = provider(fake.url)
        [result] = await sender.send([call(1, vendor_template={"*": {"code": "TTS_MISSING"}})])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == ("isv.TTS_TEMPLATE_ILLEGAL", True)


async def test_a_second_call_to_a_number_within_a_minute_is_transient_after_a_minute() -> None:
    async with FakeAliyunVoice() as fake:
        sender = provider(fake.url)
        [first] = await sender.send([call(1)])
        [second] = await sender.send([call(2)])
        await sender.close()
    assert first.error is None
    assert isinstance(second.error, TransientSendError) and second.error.code == "isv.BUSINESS_LIMIT_CONTROL"
    assert second.error.retry_after == 60


ROWS = sorted({**aliyun_rpc.COMMON_CODES, **CODES}.items())


@pytest.mark.parametrize(("code", "outcome"), ROWS, ids=[code for code, _ in ROWS])
async def test_each_aliyun_code_maps_to_its_outcome_with_the_vendor_message(code: str, outcome: str) -> None:
    async with FakeAliyunVoice() as fake:
        fake.fail_next(code, f"vendor says {code}", status=400 if outcome == "misconfigured" else 200)
        sender = provider(fake.url)
        [result] = await sender.send([call(1)])
        await sender.close()
    error = result.error
    assert error is not None and error.code == code  # type: ignore[attr-defined]
    assert f"vendor says {code}" in error.message  # type: ignore[attr-defined]
    if outcome == "transient":
        assert isinstance(error, TransientSendError)
    else:
        assert isinstance(error, PermanentSendError)
        assert error.misconfigured == (outcome == "misconfigured")
        assert error.dead_address is False


async def test_an_unknown_code_is_permanent_and_an_http_error_without_json_is_transient() -> None:
    async with FakeAliyunVoice() as fake:
        fake.fail_next("isv.SOMETHING_NEW", "something new")
        sender = provider(fake.url)
        [unknown] = await sender.send([call(1)])
        await sender.close()
    assert isinstance(unknown.error, PermanentSendError) and not unknown.error.misconfigured
    assert "something new" in unknown.error.message

    async with LoopbackServer(Reply(503, body=b"<html>busy</html>")) as down:
        sender = provider(down.url)
        [busy] = await sender.send([call(2)])
        await sender.close()
    assert isinstance(busy.error, TransientSendError) and busy.error.code == "http_503"


@pytest.mark.parametrize("phone", ["13800138000", "+86 138", "not-a-phone", None])
async def test_a_phone_not_in_e164_fails_before_calling_aliyun(phone: Any) -> None:
    async with FakeAliyunVoice() as fake:
        sender = provider(fake.url)
        [result] = await sender.send([call(1, phone=phone)])
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == "invalid_address"
    assert fake.forms == []


async def test_content_naming_no_template_for_this_account_fails_before_calling_aliyun() -> None:
    async with FakeAliyunVoice() as fake:
        sender = provider(fake.url)
        [result] = await sender.send([call(1, vendor_template={"other-account": {"code": TEMPLATE}})])
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == "no_vendor_template"
    assert not result.error.misconfigured and fake.forms == []


async def test_a_private_endpoint_is_refused_unless_private_networks_are_allowed() -> None:
    sender = provider("http://127.0.0.1:9", allow_private_networks=False)
    [result] = await sender.send([call(1)])
    await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == "url_not_allowed"


def test_the_config_names_a_bad_field_refuses_unknown_keys_and_masks_secrets() -> None:
    with pytest.raises(pydantic.ValidationError) as bad:
        AliyunVoiceProvider.Config(access_key_id="id", access_key_secret="s", endpoint="ftp://dyvms")
    assert bad.value.errors()[0]["loc"] == ("endpoint",)
    with pytest.raises(pydantic.ValidationError) as unknown:
        AliyunVoiceProvider.Config(access_key_id="id", access_key_secret="s", secret="typo")
    assert unknown.value.errors()[0]["loc"] == ("secret",)
    config = {"access_key_id": "id", "access_key_secret": "s", "receipt_token": TOKEN}
    shown = masking.mask(AliyunVoiceProvider.Config, config)
    assert shown == {"access_key_id": "id", "access_key_secret": base.MASK, "receipt_token": base.MASK}
    assert AliyunVoiceProvider.Config(access_key_id="i", access_key_secret="s").endpoint == (
        "https://dyvmsapi.aliyuncs.com"
    )


# -- receipts ---------------------------------------------------------------------------------------------


def pushed(body: bytes, token: str | None = TOKEN) -> base.Callback:
    return base.Callback(body=body, query={"token": token} if token else {}, content_type="application/json")


@pytest.mark.parametrize(
    ("status_code", "event"),
    [
        ("200000", receipts.Event.DELIVERED),
        ("200002", receipts.Event.UNDELIVERED),
        ("200005", receipts.Event.UNDELIVERED),
        ("200010", receipts.Event.UNDELIVERED),
    ],
)
def test_a_call_result_push_becomes_a_receipt_keeping_aliyuns_code(status_code: str, event: receipts.Event) -> None:
    body = voice_report("116012354148^116012354149", status_code, "用户状态", out_id="dlv-1")
    read = provider("http://127.0.0.1:9").receipts(pushed(body))
    [receipt] = read.receipts
    assert (receipt.provider_message_id, receipt.event, read.ignored) == ("116012354148^116012354149", event, 0)
    assert receipt.detail["vendor_status"] == status_code and receipt.detail["out_id"] == "dlv-1"
    assert status_code in (receipt.reason or "")


def test_an_intermediate_call_state_is_ignored() -> None:
    read = provider("http://127.0.0.1:9").receipts(pushed(voice_report("1^2", "300000")))
    assert (read.receipts, read.ignored) == ([], 1)


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789", TOKEN.upper()])
def test_a_push_without_the_shared_token_is_refused(token: str | None) -> None:
    with pytest.raises(base.RefusedCallback):
        provider("http://127.0.0.1:9").receipts(pushed(voice_report("1^2", "200000"), token))


def test_an_account_without_a_receipt_token_takes_no_push() -> None:
    sender = provider("http://127.0.0.1:9", receipt_token=None)
    assert not sender.takes_receipts
    with pytest.raises(base.RefusedCallback):
        sender.receipts(pushed(voice_report("1^2", "200000")))


@pytest.mark.parametrize("body", [b"not json", orjson.dumps([{"status_code": "200000"}]), orjson.dumps([1])])
def test_a_verified_push_that_is_not_a_report_is_unreadable(body: bytes) -> None:
    with pytest.raises(base.UnreadableCallback):
        provider("http://127.0.0.1:9").receipts(pushed(body))


async def test_polling_reports_answered_and_failed_calls_and_nothing_for_ringing_or_unknown_ones() -> None:
    async with FakeAliyunVoice() as fake:
        sender = provider(fake.url)
        answered, failed, ringing = [
            (await sender.send([call(n, phone=f"+861380013800{n}")]))[0].provider_message_id for n in range(3)
        ]
        assert answered and failed and ringing
        fake.finish(answered, "200000", "用户接听")
        fake.finish(failed, "200005", "被叫关机")
        polled = await sender.poll_receipts([answered, failed, ringing, "999^999"])
        await sender.close()
    by_id = {r.provider_message_id: r for r in polled}
    assert set(by_id) == {answered, failed}
    assert by_id[answered].event is receipts.Event.DELIVERED
    assert by_id[failed].event is receipts.Event.UNDELIVERED and by_id[failed].detail["vendor_status"] == "200005"
    queries = [f for f in fake.forms if f["Action"] == "QueryCallDetailByCallId"]
    assert {q["ProdId"] for q in queries} == {"11000000300006"}
    assert len([q for q in queries if q["CallId"] == answered]) == 1  # found on today's records: asked once


async def test_polling_with_a_wrong_secret_raises_the_misconfiguration() -> None:
    async with FakeAliyunVoice() as fake:
        sender = provider(fake.url, access_key_secret="wrong")
        with pytest.raises(PermanentSendError) as refused:
            await sender.poll_receipts(["1^2"])
        await sender.close()
    assert refused.value.code == "SignatureDoesNotMatch" and refused.value.misconfigured
