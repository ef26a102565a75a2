"""The ``aliyun_sms`` kind against a fake Dysmsapi on loopback that recomputes the RPC signature."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from clarion.channels import aliyun_rpc, base
from clarion.channels.aliyun_sms import ERRORS, AliyunSmsProvider
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.fakes import aliyun
from tests.fakes.aliyun import FakeAliyunSms, sms_report

NAME = "aliyun-a"
PHONE = "+8613800138000"
TOKEN = "aliyun-report-token-0123456789"
BEIJING = timezone(timedelta(hours=8))


def provider(url: str, **config: Any) -> AliyunSmsProvider:
    options = {
        "access_key_id": aliyun.ACCESS_KEY_ID,
        "access_key_secret": aliyun.ACCESS_KEY_SECRET,
        "endpoint": url,
        "allow_private_networks": True,
        "timeout": 5,
        "receipt_token": TOKEN,
        **config,
    }
    return AliyunSmsProvider(AliyunSmsProvider.Config(**options), name=NAME)


def content(text: str = "【克拉里昂】您的验证码是 4711", account: str = NAME, **params: str) -> dict[str, Any]:
    return {"text": text, "vendor_template": {account: {"code": aliyun.TEMPLATE, "params": params or {"code": "4711"}}}}


def sms(n: int = 1, phone: str = PHONE, body: dict[str, Any] | None = None) -> Outgoing:
    return Outgoing(f"dlv-{n}", f"msg-{n}", f"u{n}", Channel.SMS, phone, body if body is not None else content())


async def send_one(sender: AliyunSmsProvider, item: Outgoing) -> Any:
    [result] = await sender.send([item])
    return result


async def test_a_signed_send_sms_carries_template_params_sign_name_and_delivery_id() -> None:
    async with FakeAliyunSms() as fake:
        sender = provider(fake.url)
        result = await send_one(sender, sms())
        await sender.close()
    assert result.error is None, result.error
    [sent] = fake.sent
    today = datetime.now(BEIJING).strftime("%Y%m%d")
    assert result.provider_message_id == f"{sent.biz_id}:13800138000:{today}"
    form = sent.form
    assert (form["Action"], form["Version"], form["RegionId"]) == ("SendSms", "2017-05-25", "cn-hangzhou")
    assert (form["PhoneNumbers"], form["SignName"], form["TemplateCode"]) == (
        "13800138000",
        "克拉里昂",
        "SMS_154950909",
    )
    assert orjson.loads(form["TemplateParam"]) == {"code": "4711"}
    assert form["OutId"] == "dlv-1"
    assert form["SignatureMethod"] == "HMAC-SHA1" and form["SignatureVersion"] == "1.0"


def test_the_signature_is_the_one_aliyun_publishes_for_its_example() -> None:
    example = {
        "Format": "XML",
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    assert aliyun_rpc.sign("testsecret", "GET", example) == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    assert aliyun.signature("testsecret", "GET", example) == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


async def test_a_wrong_secret_is_refused_by_the_fake_and_marks_the_account_misconfigured() -> None:
    async with FakeAliyunSms() as fake:
        sender = provider(fake.url, access_key_secret="not-the-secret")
        result = await send_one(sender, sms())
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == ("SignatureDoesNotMatch", True)
    assert "not matched" in result.error.message
    assert fake.sent == []


async def test_an_unknown_access_key_is_misconfigured() -> None:
    async with FakeAliyunSms() as fake:
        sender = provider(fake.url, access_key_id="LTAI-nobody")
        result = await send_one(sender, sms())
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.misconfigured
    assert result.error.code == "InvalidAccessKeyId.NotFound"


async def test_the_account_sign_name_serves_a_text_without_signature_and_none_at_all_fails() -> None:
    async with FakeAliyunSms() as fake:
        signed_by_account = provider(fake.url, sign_name="克拉里昂")
        unsigned = provider(fake.url)
        ok = await send_one(signed_by_account, sms(1, body=content("您的验证码是 4711")))
        refused = await send_one(unsigned, sms(2, body=content("您的验证码是 4711")))
        await signed_by_account.close()
        await unsigned.close()
    assert ok.error is None and fake.sent[0].form["SignName"] == "克拉里昂"
    assert isinstance(refused.error, PermanentSendError) and refused.error.code == "no_sign_name"
    assert len(fake.forms) == 1


async def test_a_content_without_this_accounts_template_fails_without_blaming_the_account() -> None:
    async with FakeAliyunSms() as fake:
        sender = provider(fake.url)
        other = await send_one(sender, sms(1, body=content(account="aliyun-b")))
        bare = await send_one(sender, sms(2, body={"text": "【克拉里昂】hi"}))
        wildcard = await send_one(sender, sms(3, body=content(account="*")))
        await sender.close()
    for result in (other, bare):
        assert isinstance(result.error, PermanentSendError)
        assert (result.error.code, result.error.misconfigured) == ("no_vendor_template", False)
    assert wildcard.error is None
    assert len(fake.forms) == 1


async def test_an_international_number_goes_as_country_code_and_number() -> None:
    async with FakeAliyunSms() as fake:
        sender = provider(fake.url)
        result = await send_one(sender, sms(1, phone="+85261234567"))
        not_e164 = await send_one(sender, sms(2, phone="13800138000"))
        await sender.close()
    assert result.error is None and fake.sent[0].form["PhoneNumbers"] == "85261234567"
    assert isinstance(not_e164.error, PermanentSendError) and not_e164.error.code == "invalid_address"


async def test_the_fake_checks_the_template_and_its_parameters() -> None:
    async with FakeAliyunSms() as fake:
        sender = provider(fake.url)
        unknown = {"text": "【克拉里昂】x", "vendor_template": {NAME: {"code": "SMS_999", "params": {}}}}
        missing = {
            "text": "【克拉里昂】x",
            "vendor_template": {NAME: {"code": aliyun.TEMPLATE, "params": {"other": "1"}}},
        }
        unregistered = await send_one(sender, sms(1, body=unknown))
        incomplete = await send_one(sender, sms(2, body=missing))
        await sender.close()
    assert isinstance(unregistered.error, PermanentSendError)
    assert (unregistered.error.code, unregistered.error.misconfigured) == ("isv.SMS_TEMPLATE_ILLEGAL", True)
    assert isinstance(incomplete.error, PermanentSendError)
    assert (incomplete.error.code, incomplete.error.misconfigured) == ("isv.TEMPLATE_MISSING_PARAMETERS", False)
    assert "模版变量缺少对应参数值" in incomplete.error.message


@pytest.mark.parametrize(("code", "meaning"), sorted({**aliyun_rpc.COMMON_CODES, **ERRORS}.items()))
async def test_each_aliyun_code_maps_to_its_outcome(code: str, meaning: str) -> None:
    async with FakeAliyunSms() as fake:
        fake.fail_next(code, f"the vendor says {code}", 400 if code.startswith(("Throttling", "Invalid")) else 200)
        sender = provider(fake.url)
        result = await send_one(sender, sms())
        await sender.close()
    error = result.error
    assert error is not None and error.code == code and f"the vendor says {code}" in error.message
    if meaning == "transient":
        assert isinstance(error, TransientSendError)
    else:
        assert isinstance(error, PermanentSendError)
        assert error.misconfigured is (meaning == "misconfigured")


async def test_flow_control_is_retried_after_a_minute_and_an_unknown_code_fails_the_delivery() -> None:
    async with FakeAliyunSms() as fake:
        fake.fail_next("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1")
        fake.fail_next("isv.SOMETHING_NEW", "new")
        sender = provider(fake.url)
        limited = await send_one(sender, sms(1))
        unknown = await send_one(sender, sms(2))
        await sender.close()
    assert isinstance(limited.error, TransientSendError) and limited.error.retry_after == 60.0
    assert isinstance(unknown.error, PermanentSendError) and not unknown.error.misconfigured
    assert unknown.error.code == "isv.SOMETHING_NEW"


async def test_polling_reports_delivered_and_failed_and_leaves_waiting_ones_out() -> None:
    async with FakeAliyunSms() as fake:
        sender = provider(fake.url)
        results = [await send_one(sender, sms(n)) for n in (1, 2, 3)]
        ids = [r.provider_message_id for r in results]
        fake.report(fake.sent[0].biz_id, delivered=True)
        fake.report(fake.sent[1].biz_id, delivered=False, err_code="IC:0015")
        found = await sender.poll_receipts([*ids, "not-an-aliyun-id"])
        await sender.close()
    by_id = {r.provider_message_id: r for r in found}
    assert set(by_id) == {ids[0], ids[1]}
    assert by_id[ids[0]].event is receipts.Event.DELIVERED
    assert by_id[ids[1]].event is receipts.Event.UNDELIVERED
    assert by_id[ids[1]].detail["vendor_status"] == "IC:0015"
    queries = [f for f in fake.forms if f["Action"] == "QuerySendDetails"]
    assert {(q["BizId"], q["PhoneNumber"]) for q in queries} == {(s.biz_id, "13800138000") for s in fake.sent}


async def test_polling_with_refused_credentials_raises_rather_than_reporting_nothing() -> None:
    async with FakeAliyunSms() as fake:
        sender = provider(fake.url)
        sent = await send_one(sender, sms())
        await sender.close()
        wrong = provider(fake.url, access_key_secret="wrong")
        with pytest.raises(PermanentSendError) as raised:
            await wrong.poll_receipts([sent.provider_message_id])
        await wrong.close()
    assert raised.value.code == "SignatureDoesNotMatch"


async def test_a_pushed_report_with_the_token_is_read_and_one_without_it_refused() -> None:
    async with FakeAliyunSms() as fake:
        sender = provider(fake.url)
        sent = await send_one(sender, sms())
        await sender.close()
    biz_id = fake.sent[0].biz_id
    good = base.Callback(sms_report(biz_id, "13800138000", success=True), query={"token": TOKEN})
    failed = base.Callback(
        sms_report(biz_id, "8613800138000", success=False, err_code="MK:0005"), query={"token": TOKEN}
    )
    [delivered] = sender.receipts(good).receipts
    [undelivered] = sender.receipts(failed).receipts
    assert delivered.provider_message_id == sent.provider_message_id
    assert delivered.event is receipts.Event.DELIVERED
    assert undelivered.provider_message_id == sent.provider_message_id
    assert (undelivered.event, undelivered.detail["vendor_status"]) == (receipts.Event.UNDELIVERED, "MK:0005")
    for query in ({"token": "wrong-token-0123456789"}, {}):
        with pytest.raises(base.RefusedCallback):
            sender.receipts(base.Callback(good.body, query=query))
    with pytest.raises(base.UnreadableCallback):
        sender.receipts(base.Callback(b"not json", query={"token": TOKEN}))
    assert not provider("http://127.0.0.1:1", receipt_token=None).takes_receipts


def test_config_refuses_unknown_keys_and_keeps_secrets_declared() -> None:
    with pytest.raises(ValueError, match="access_key_secret"):
        AliyunSmsProvider.Config(access_key_id="x")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="extra"):
        AliyunSmsProvider.Config(access_key_id="x", access_key_secret="y", typo=1)  # type: ignore[call-arg]
    assert AliyunSmsProvider.Config.secret_fields == {"access_key_secret", "receipt_token"}
    assert (
        AliyunSmsProvider.Config(access_key_id="x", access_key_secret="y").endpoint == "https://dysmsapi.aliyuncs.com"
    )
    assert datetime.now(UTC)  # the module's clock is the system's


async def test_with_batch_on_one_send_batch_sms_carries_each_number_its_sign_and_params() -> None:
    items = [sms(n, phone=f"+861380013800{n}", body=content(**{"code": f"100{n}"})) for n in range(3)]
    other_template = sms(7, body={"text": "【克拉里昂】hi", "vendor_template": {NAME: {"code": "SMS_000001"}}})
    async with FakeAliyunSms() as fake:
        sender = provider(fake.url, batch=True)
        results = await sender.send([*items, other_template])
        fake.report(fake.batches[0], delivered=True)  # the whole batch delivered
        found = await sender.poll_receipts([r.provider_message_id for r in results if r.provider_message_id])
        await sender.close()
    assert all(r.error is None for r in results), results
    actions = [f["Action"] for f in fake.forms if f["Action"].startswith("Send")]
    assert sorted(actions) == ["SendBatchSms", "SendSms"]
    [batch] = [f for f in fake.forms if f["Action"] == "SendBatchSms"]
    assert orjson.loads(batch["PhoneNumberJson"]) == ["13800138000", "13800138001", "13800138002"]
    assert orjson.loads(batch["SignNameJson"]) == ["克拉里昂"] * 3
    assert orjson.loads(batch["TemplateParamJson"]) == [{"code": "1000"}, {"code": "1001"}, {"code": "1002"}]
    by_id = {r.delivery_id: r.provider_message_id for r in results}
    assert by_id["dlv-1"] == f"{fake.batches[0]}:13800138001:{datetime.now(BEIJING).strftime('%Y%m%d')}"
    assert len({r.provider_message_id for r in found}) == 3  # the batch's three, each found by its number


async def test_a_batch_refused_for_one_bad_number_is_sent_one_by_one_and_only_that_one_fails() -> None:
    items = [sms(1), sms(2, phone="+8613800138001"), sms(3, phone="+1234567")]
    async with FakeAliyunSms() as fake:
        sender = provider(fake.url, batch=True)
        results = {r.delivery_id: r for r in await sender.send(items)}
        fake.fail_next("SignatureDoesNotMatch", "scripted refusal of the account", 400)
        refused = await sender.send([sms(4), sms(5, phone="+8613800138001")])
        await sender.close()
    assert results["dlv-1"].error is None and results["dlv-2"].error is None
    bad = results["dlv-3"].error
    assert isinstance(bad, PermanentSendError) and bad.code == "isv.MOBILE_NUMBER_ILLEGAL"
    assert fake.batches == [] and len(fake.sent) == 2
    assert [type(r.error) for r in refused] == [PermanentSendError, PermanentSendError]
    assert all(isinstance(r.error, PermanentSendError) and r.error.misconfigured for r in refused)
