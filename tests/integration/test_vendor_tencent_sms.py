"""The ``tencent_sms`` kind against a fake SMS API 3.0 on loopback that recomputes the TC3-HMAC-SHA256 signature."""

from __future__ import annotations

from typing import Any

import pytest

from clarion.channels import base
from clarion.channels.tencent_sms import _PREFIXES, ERRORS, TencentSmsProvider
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.fakes import tencent
from tests.fakes.tencent import FakeTencentSms, status_report, tc3_signature

NAME = "tencent-a"
PHONE = "+8613800138000"
TOKEN = "tencent-report-token-0123456789"


def provider(url: str, **config: Any) -> TencentSmsProvider:
    options = {
        "secret_id": tencent.SECRET_ID,
        "secret_key": tencent.SECRET_KEY,
        "sdk_app_id": tencent.SDK_APP_ID,
        "endpoint": url,
        "allow_private_networks": True,
        "timeout": 5,
        "receipt_token": TOKEN,
        **config,
    }
    return TencentSmsProvider(TencentSmsProvider.Config(**options), name=NAME)


def content(code: str = "4711", text: str = "【克拉里昂】验证码 4711，5 分钟内有效", **params: str) -> dict[str, Any]:
    template = {"code": tencent.TEMPLATE, "params": params or {"1": code, "2": "5"}}
    return {"text": text, "vendor_template": {NAME: template}}


def sms(n: int = 1, phone: str = PHONE, body: dict[str, Any] | None = None) -> Outgoing:
    return Outgoing(f"dlv-{n}", f"msg-{n}", f"u{n}", Channel.SMS, phone, body if body is not None else content())


def test_the_fakes_signature_is_the_one_tencent_publishes_for_its_example() -> None:
    payload = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
    headers = {"content-type": "application/json; charset=utf-8", "host": "cvm.tencentcloudapi.com"}
    signed = tc3_signature(
        "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
        headers=headers,
        signed=["content-type", "host"],
        payload=payload,
        timestamp=1551113065,
        service="cvm",
    )
    assert signed == "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"


async def test_a_signed_send_sms_carries_app_template_positional_params_and_sign_name() -> None:
    async with FakeTencentSms() as fake:
        sender = provider(fake.url)
        [result] = await sender.send([sms()])
        await sender.close()
    assert result.error is None, result.error
    [serial] = fake.serials
    assert result.provider_message_id == serial
    [body] = fake.requests
    assert body == {
        "PhoneNumberSet": [PHONE],
        "SmsSdkAppId": tencent.SDK_APP_ID,
        "TemplateId": tencent.TEMPLATE,
        "TemplateParamSet": ["4711", "5"],
        "SessionContext": "dlv-1",
        "SignName": "克拉里昂",
    }
    [request] = fake.server.requests if fake.server else []
    assert request.headers["X-TC-Action"] == "SendSms" and request.headers["X-TC-Version"] == "2021-01-11"
    assert request.headers["X-TC-Region"] == "ap-guangzhou"
    assert request.headers["Authorization"].startswith(f"TC3-HMAC-SHA256 Credential={tencent.SECRET_ID}/")


async def test_deliveries_sharing_template_and_params_go_in_one_request_each_with_its_serial() -> None:
    same = [sms(n, phone=f"+861380013800{n}") for n in range(3)]
    other = sms(9, body=content(code="9999"))
    duplicate = sms(10, phone="+8613800138000")
    async with FakeTencentSms() as fake:
        fake.number_codes["+8613800138001"] = ("LimitExceeded.PhoneNumberDailyLimit", "daily limit")
        sender = provider(fake.url)
        results = await sender.send([*same, other, duplicate])
        await sender.close()
    by_id = {r.delivery_id: r for r in results}
    assert sorted(len(b["PhoneNumberSet"]) for b in fake.requests) == [1, 1, 3]
    limited = by_id["dlv-1"].error
    assert isinstance(limited, TransientSendError) and limited.code == "LimitExceeded.PhoneNumberDailyLimit"
    serials = {by_id[d].provider_message_id for d in ("dlv-0", "dlv-2", "dlv-9", "dlv-10")}
    assert None not in serials and len(serials) == 4
    assert {fake.serials[s] for s in serials if s} == {"+8613800138000", "+8613800138002"}


async def test_a_wrong_secret_key_is_refused_with_signature_failure_and_the_account_is_misconfigured() -> None:
    async with FakeTencentSms() as fake:
        sender = provider(fake.url, secret_key="not-the-key")
        [result] = await sender.send([sms()])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == ("AuthFailure.SignatureFailure", True)
    assert fake.requests == []


async def test_an_unknown_secret_id_and_app_id_are_misconfigured() -> None:
    async with FakeTencentSms() as fake:
        nobody = provider(fake.url, secret_id="AKIDnobody")
        wrong_app = provider(fake.url, sdk_app_id="1400000000")
        [unknown] = await nobody.send([sms()])
        [app] = await wrong_app.send([sms()])
        await nobody.close()
        await wrong_app.close()
    assert isinstance(unknown.error, PermanentSendError) and unknown.error.misconfigured
    assert unknown.error.code == "AuthFailure.SecretIdNotFound"
    assert isinstance(app.error, PermanentSendError) and app.error.misconfigured
    assert app.error.code == "UnauthorizedOperation.SmsSdkAppIdVerifyFail"


async def test_the_fake_checks_template_sign_name_and_each_number() -> None:
    unknown_template = {"text": "【克拉里昂】x", "vendor_template": {NAME: {"code": "1", "params": {}}}}
    async with FakeTencentSms() as fake:
        sender = provider(fake.url)
        [template] = await sender.send([sms(1, body=unknown_template)])
        foreign_sign = provider(fake.url, sign_name="别人的签名")
        [unsigned] = await foreign_sign.send([sms(2, body=content(text="x"))])
        await foreign_sign.close()
        [count] = await sender.send([sms(3, body=content(**{"1": "4711"}))])
        fake.number_codes["+8613800138000"] = ("InvalidParameterValue.IncorrectPhoneNumber", "incorrect number")
        [number] = await sender.send([sms(4)])
        await sender.close()
    assert isinstance(template.error, PermanentSendError) and template.error.misconfigured
    assert template.error.code == "FailedOperation.TemplateIncorrectOrUnapproved"
    assert isinstance(unsigned.error, PermanentSendError) and unsigned.error.misconfigured
    assert unsigned.error.code == "FailedOperation.SignatureIncorrectOrUnapproved"
    assert isinstance(count.error, PermanentSendError) and not count.error.misconfigured
    assert count.error.code == "InvalidParameterValue.TemplateParameterFormatError"
    assert isinstance(number.error, PermanentSendError) and not number.error.misconfigured
    assert (
        number.error.code == "InvalidParameterValue.IncorrectPhoneNumber" and "incorrect number" in number.error.message
    )


async def test_templates_named_params_and_missing_templates_fail_before_any_request() -> None:
    named = {"text": "【克拉里昂】x", "vendor_template": {NAME: {"code": tencent.TEMPLATE, "params": {"code": "1"}}}}
    async with FakeTencentSms() as fake:
        sender = provider(fake.url)
        results = await sender.send([sms(1, body=named), sms(2, body={"text": "【克拉里昂】x"})])
        [international] = await sender.send([sms(3, phone="+14155550100", body=content(text="no sign"))])
        await sender.close()
    codes = {
        r.delivery_id: (r.error.code, r.error.misconfigured) for r in results if isinstance(r.error, PermanentSendError)
    }
    assert codes == {"dlv-1": ("invalid_vendor_template", False), "dlv-2": ("no_vendor_template", False)}
    assert international.error is None
    assert "SignName" not in fake.requests[-1] and len(fake.requests) == 1


def _meanings() -> list[tuple[str, str]]:
    rows = dict(ERRORS)
    examples = {"AuthFailure.": "AuthFailure.UnauthorizedOperation", "LimitExceeded.": "LimitExceeded.AppDailyLimit"}
    for prefix, meaning in _PREFIXES:
        rows.setdefault(examples.get(prefix, prefix + ".Example"), meaning)
    return sorted(rows.items())


@pytest.mark.parametrize(("code", "meaning"), _meanings())
async def test_each_tencent_code_maps_to_its_outcome(code: str, meaning: str) -> None:
    async with FakeTencentSms() as fake:
        fake.fail_next(code, f"the vendor says {code}")
        sender = provider(fake.url)
        [result] = await sender.send([sms()])
        await sender.close()
    error = result.error
    assert error is not None and error.code == code and f"the vendor says {code}" in error.message
    if meaning == "transient":
        assert isinstance(error, TransientSendError)
    else:
        assert isinstance(error, PermanentSendError) and error.misconfigured is (meaning == "misconfigured")


async def test_an_http_failure_is_transient_and_an_unknown_code_fails_the_delivery() -> None:
    async with FakeTencentSms() as fake:
        fake.fail_next("FailedOperation.SomethingNew", "new")
        sender = provider(fake.url)
        [unknown] = await sender.send([sms()])
        await sender.close()
    unreachable = provider("http://127.0.0.1:1")
    [down] = await unreachable.send([sms()])
    await unreachable.close()
    assert isinstance(unknown.error, PermanentSendError) and not unknown.error.misconfigured
    assert isinstance(down.error, TransientSendError) and down.error.code == "connect_error"


async def test_a_status_callback_with_the_token_is_read_and_one_without_it_refused() -> None:
    sender = provider("http://127.0.0.1:1")
    good = base.Callback(status_report("3369:1", PHONE, success=True), query={"token": TOKEN})
    failed = base.Callback(status_report("3369:2", PHONE, success=False), query={"token": TOKEN})
    [delivered] = sender.receipts(good).receipts
    [undelivered] = sender.receipts(failed).receipts
    assert (delivered.provider_message_id, delivered.event) == ("3369:1", receipts.Event.DELIVERED)
    assert (undelivered.provider_message_id, undelivered.event) == ("3369:2", receipts.Event.UNDELIVERED)
    assert undelivered.detail == {"vendor_status": "FAIL", "vendor_code": "MK:0005", "vendor_reason": "用户手机关机"}
    for query in ({"token": "wrong-token-0123456789"}, {}):
        with pytest.raises(base.RefusedCallback):
            sender.receipts(base.Callback(good.body, query=query))
    with pytest.raises(base.UnreadableCallback):
        sender.receipts(base.Callback(b'[{"mobile": "1"}]', query={"token": TOKEN}))
    await sender.close()
    assert sender.receipt_answer == {"result": 0, "errmsg": "OK"}
