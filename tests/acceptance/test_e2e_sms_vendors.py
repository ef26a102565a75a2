"""Aliyun, Tencent and Twilio SMS end to end, on SQLite and PostgreSQL: a template naming the vendor template →
``POST /v1/messages`` → the fake vendor's recorded (and signature-checked) request → a receipt posted to
``POST /r/{provider}`` as the vendor posts it → ``GET /v1/messages/{id}`` says delivered. A receipt with a wrong
token or signature is 401 and changes nothing. Also: each kind's probe, and its config checked on save."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.pipeline import feedback
from clarion.store import tables as t
from tests.acceptance.test_e2e_channels import message, put_provider, send_one, statuses
from tests.conftest import drain, put_template, put_user
from tests.fakes import aliyun, tencent, twilio
from tests.fakes.aliyun import FakeAliyunSms, sms_report
from tests.fakes.tencent import FakeTencentSms, status_report
from tests.fakes.twilio import FakeTwilio, callback_signature, status_callback

PHONE = "+8613800138000"
US_PHONE = "+14155550100"
TOKEN = "vendor-callback-token-0123456789"


@pytest.fixture
async def vendor_side(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """The API as a vendor calls it: no API key."""
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


def aliyun_config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "access_key_id": aliyun.ACCESS_KEY_ID,
        "access_key_secret": aliyun.ACCESS_KEY_SECRET,
        "endpoint": url,
        "allow_private_networks": True,
        "receipt_token": TOKEN,
        "timeout": 5,
        **extra,
    }


def tencent_config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "secret_id": tencent.SECRET_ID,
        "secret_key": tencent.SECRET_KEY,
        "sdk_app_id": tencent.SDK_APP_ID,
        "endpoint": url,
        "allow_private_networks": True,
        "receipt_token": TOKEN,
        "timeout": 5,
        **extra,
    }


def twilio_config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "account_sid": twilio.ACCOUNT_SID,
        "auth_token": twilio.AUTH_TOKEN,
        "from_number": twilio.FROM_NUMBER,
        "endpoint": url,
        "allow_private_networks": True,
        "timeout": 5,
        **extra,
    }


async def code_template(api: httpx.AsyncClient) -> None:
    """One template for all three vendors: Aliyun names its parameter, Tencent's are positional, Twilio sends text."""
    vendor_template = {
        "aliyun-a": {"code": aliyun.TEMPLATE, "params": {"code": "{data.code}"}},
        "tencent-a": {"code": tencent.TEMPLATE, "params": {"1": "{data.code}", "2": "{data.minutes}"}},
    }
    sms = {
        "text": "验证码 {data.code}，{data.minutes} 分钟内有效",
        "signature": "克拉里昂",
        "vendor_template": vendor_template,
    }
    await put_template(api, "code", category="verification", channels={"sms": sms})


async def sent_through(api: httpx.AsyncClient, clarion: bootstrap.Clarion, phone: str = PHONE) -> dict[str, Any]:
    await put_user(api, "u1", addresses={"sms": phone})
    await code_template(api)
    message_id = await send_one(api, "code", "u1", {"code": "4711", "minutes": "5"})
    assert await drain(clarion) == 1
    detail = await message(api, message_id)
    [delivery] = detail["deliveries"]
    assert delivery["status"] == "sent", delivery
    return {"id": message_id, "delivery": delivery}


async def receipts_kept(clarion: bootstrap.Clarion) -> int:
    async with clarion.db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(t.receipts))).scalar() or 0)


async def delivered(api: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
    detail = await message(api, message_id)
    [delivery] = detail["deliveries"]
    assert (detail["status"], delivery["status"]) == ("delivered", "delivered"), detail
    assert statuses(delivery)[-2:] == ["sent", "delivered"]
    return delivery


async def test_aliyun_sms_sends_the_vendor_template_and_its_pushed_report_makes_it_delivered(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    async with FakeAliyunSms() as fake:
        await put_provider(api, "aliyun-a", "sms", "aliyun_sms", aliyun_config(fake.url))
        sent = await sent_through(api, clarion)
    [request] = fake.sent
    assert (request.form["SignName"], request.form["TemplateCode"]) == ("克拉里昂", aliyun.TEMPLATE)
    assert request.params == {"code": "4711"}
    assert sent["delivery"]["provider_message_id"].startswith(request.biz_id + ":13800138000:")
    report = sms_report(request.biz_id, "13800138000", success=True)

    refused = await vendor_side.post("/r/aliyun-a?token=wrong-token-0123456789", content=report)
    assert refused.status_code == 401, refused.text
    assert (await message(api, sent["id"]))["deliveries"][0]["status"] == "sent"
    assert await receipts_kept(clarion) == 0

    taken = await vendor_side.post(f"/r/aliyun-a?token={TOKEN}", content=report)
    assert taken.status_code == 200, taken.text
    assert taken.json() == {"accepted": 1, "pending": 0, "ignored": 0, "code": 0, "msg": "成功"}
    delivery = await delivered(api, sent["id"])
    assert delivery["timeline"][-1]["detail"]["vendor_status"] == "DELIVERED"


async def test_aliyun_sms_polled_details_applied_as_receipts_make_it_delivered(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    async with FakeAliyunSms() as fake:
        await put_provider(api, "aliyun-a", "sms", "aliyun_sms", aliyun_config(fake.url, receipt_token=None))
        sent = await sent_through(api, clarion)
        fake.report(fake.sent[0].biz_id, delivered=True)
        provider = await clarion.providers.get("aliyun-a")
        found = await provider.poll_receipts([sent["delivery"]["provider_message_id"]])

    async def job(conn: Any) -> feedback.Tally:
        return await feedback.receive(conn, "aliyun-a", found, datetime.now(UTC))

    await clarion.db.write(job)
    await delivered(api, sent["id"])
    unpushed = await api.post("/r/aliyun-a?token=anything", content=b"[]")
    assert unpushed.status_code == 404  # an account without receipt_token takes no push


async def test_tencent_sms_sends_positional_params_and_its_status_callback_makes_it_delivered(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    async with FakeTencentSms() as fake:
        await put_provider(api, "tencent-a", "sms", "tencent_sms", tencent_config(fake.url))
        sent = await sent_through(api, clarion)
    [body] = fake.requests
    assert (body["SignName"], body["TemplateId"], body["TemplateParamSet"]) == (
        "克拉里昂",
        tencent.TEMPLATE,
        ["4711", "5"],
    )
    assert body["PhoneNumberSet"] == [PHONE]
    [serial] = fake.serials
    assert sent["delivery"]["provider_message_id"] == serial
    report = status_report(serial, PHONE, success=True)

    refused = await vendor_side.post("/r/tencent-a", content=report)
    assert refused.status_code == 401, refused.text
    assert (await message(api, sent["id"]))["deliveries"][0]["status"] == "sent"
    assert await receipts_kept(clarion) == 0

    taken = await vendor_side.post(f"/r/tencent-a?token={TOKEN}", content=report)
    assert taken.status_code == 200, taken.text
    assert taken.json() == {"accepted": 1, "pending": 0, "ignored": 0, "result": 0, "errmsg": "OK"}
    delivery = await delivered(api, sent["id"])
    assert delivery["timeline"][-1]["detail"]["vendor_status"] == "SUCCESS"


async def test_twilio_sends_the_text_and_its_signed_status_callback_makes_it_delivered(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    callback_url = f"{clarion.settings.public_url.rstrip('/')}/r/twilio-a"
    async with FakeTwilio() as fake:
        await put_provider(api, "twilio-a", "sms", "twilio", twilio_config(fake.url, status_callback=callback_url))
        sent = await sent_through(api, clarion, phone=US_PHONE)
    [(sid, form)] = fake.messages.items()
    assert form["Body"] == "【克拉里昂】验证码 4711，5 分钟内有效"
    assert (form["To"], form["StatusCallback"]) == (US_PHONE, callback_url)
    assert sent["delivery"]["provider_message_id"] == sid
    params = status_callback(sid, "delivered", US_PHONE)
    body = urlencode(params)
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}

    wrong = callback_signature("not-the-auth-token", callback_url, params)
    refused = await vendor_side.post("/r/twilio-a", content=body, headers={**form_type, "X-Twilio-Signature": wrong})
    assert refused.status_code == 401, refused.text
    assert (await message(api, sent["id"]))["deliveries"][0]["status"] == "sent"
    assert await receipts_kept(clarion) == 0

    good = callback_signature(twilio.AUTH_TOKEN, callback_url, params)
    taken = await vendor_side.post("/r/twilio-a", content=body, headers={**form_type, "X-Twilio-Signature": good})
    assert taken.status_code == 200, taken.text
    assert taken.json() == {"accepted": 1, "pending": 0, "ignored": 0}
    await delivered(api, sent["id"])


async def test_twilio_without_a_configured_callback_checks_the_public_url_with_its_query(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    async with FakeTwilio() as fake:
        await put_provider(api, "twilio-a", "sms", "twilio", twilio_config(fake.url))
        sent = await sent_through(api, clarion, phone=US_PHONE)
    [(sid, form)] = fake.messages.items()
    assert "StatusCallback" not in form
    params = status_callback(sid, "undelivered", US_PHONE, error_code="30003")
    public = f"{clarion.settings.public_url.rstrip('/')}/r/twilio-a?src=console"
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": callback_signature(twilio.AUTH_TOKEN, public, params),
    }
    taken = await vendor_side.post("/r/twilio-a?src=console", content=urlencode(params), headers=headers)
    assert taken.status_code == 200, taken.text
    detail = await message(api, sent["id"])
    assert detail["deliveries"][0]["status"] == "undelivered"
    assert detail["deliveries"][0]["timeline"][-1]["detail"]["vendor_code"] == "30003"


# -- the probe and the config ----------------------------------------------------------------------------


async def test_each_kind_answers_the_probe_with_the_vendors_message_id(api: httpx.AsyncClient) -> None:
    async with FakeAliyunSms() as ali, FakeTencentSms() as ten, FakeTwilio() as twi:
        await put_provider(api, "aliyun-a", "sms", "aliyun_sms", aliyun_config(ali.url, sign_name="克拉里昂"))
        await put_provider(api, "tencent-a", "sms", "tencent_sms", tencent_config(ten.url, sign_name="克拉里昂"))
        await put_provider(api, "twilio-a", "sms", "twilio", twilio_config(twi.url))
        templated = {
            "text": "Clarion test message",
            "vendor_template": {
                "aliyun-a": {"code": aliyun.TEMPLATE, "params": {"code": "0000"}},
                "tencent-a": {"code": tencent.TEMPLATE, "params": {"1": "0000", "2": "5"}},
            },
        }
        answers = {
            name: (await api.post(f"/v1/providers/{name}/test", json={"address": address, "content": content})).json()
            for name, address, content in (
                ("aliyun-a", PHONE, templated),
                ("tencent-a", PHONE, templated),
                ("twilio-a", US_PHONE, None),
            )
        }
        bare = (await api.post("/v1/providers/aliyun-a/test", json={"address": PHONE})).json()
    assert answers["aliyun-a"]["ok"] and answers["aliyun-a"]["provider_message_id"].startswith(ali.sent[0].biz_id)
    assert answers["tencent-a"]["ok"] and answers["tencent-a"]["provider_message_id"] in ten.serials
    assert answers["twilio-a"]["ok"] and answers["twilio-a"]["provider_message_id"] in twi.messages
    assert twi.messages[answers["twilio-a"]["provider_message_id"]]["Body"] == "Clarion test message"
    assert bare["ok"] is False and "no_vendor_template" in orjson.dumps(bare["error"]).decode()


@pytest.mark.parametrize(
    ("kind", "config", "field"),
    [
        ("aliyun_sms", {"access_key_id": "x"}, "access_key_secret"),
        ("tencent_sms", {"secret_id": "x", "secret_key": "y", "sdk_app_id": "not-digits"}, "sdk_app_id"),
        ("twilio", {"account_sid": twilio.ACCOUNT_SID, "auth_token": "t", "from_nmuber": "+1"}, "from_nmuber"),
    ],
)
async def test_a_bad_config_is_422_naming_the_field(
    api: httpx.AsyncClient, kind: str, config: dict[str, Any], field: str
) -> None:
    answer = await api.put("/v1/providers/vendor", json={"channel": "sms", "kind": kind, "config": config})
    assert answer.status_code == 422, answer.text
    assert field in answer.text


async def test_secrets_are_masked_when_the_accounts_are_read(api: httpx.AsyncClient) -> None:
    await put_provider(api, "aliyun-a", "sms", "aliyun_sms", aliyun_config("https://dysmsapi.aliyuncs.com"))
    await put_provider(api, "tencent-a", "sms", "tencent_sms", tencent_config("https://sms.tencentcloudapi.com"))
    await put_provider(api, "twilio-a", "sms", "twilio", twilio_config("https://api.twilio.com"))
    shown = {
        name: (await api.get(f"/v1/providers/{name}")).json()["config"]
        for name in ("aliyun-a", "tencent-a", "twilio-a")
    }
    text = orjson.dumps(shown).decode()
    for secret in (aliyun.ACCESS_KEY_SECRET, tencent.SECRET_KEY, twilio.AUTH_TOKEN, TOKEN):
        assert secret not in text
    assert shown["aliyun-a"]["access_key_id"] == aliyun.ACCESS_KEY_ID
    assert shown["twilio-a"]["auth_token"] == "********"


@pytest.mark.parametrize(
    ("vendor_template", "field"),
    [
        ({"bad name!": {"code": "SMS_1"}}, "vendor_template"),
        ({"aliyun-a": {"code": ""}}, "code"),
        ({"aliyun-a": {"code": "SMS_1", "params": {"no spaces": "x"}}}, "params"),
        ({"aliyun-a": {"params": {"code": "x"}}}, "code"),
    ],
)
async def test_a_bad_vendor_template_is_422_naming_the_field(
    api: httpx.AsyncClient, vendor_template: dict[str, Any], field: str
) -> None:
    sms = {"text": "验证码 {data.code}", "vendor_template": vendor_template}
    answer = await api.put(
        "/v1/templates/code", json={"name": "code", "category": "verification", "channels": {"sms": sms}}
    )
    assert answer.status_code == 422, answer.text
    assert "vendor_template" in answer.text and field in answer.text


async def test_a_stored_template_keeps_the_vendor_template_and_renders_its_params(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await code_template(api)
    stored = (await api.get("/v1/templates/code")).json()
    assert stored["channels"]["sms"]["vendor_template"]["aliyun-a"]["params"] == {"code": "{data.code}"}
    # the params are rendered like the text: one the text does not use is still required
    only_in_params = {"aliyun-a": {"code": aliyun.TEMPLATE, "params": {"code": "{data.secret}"}}}
    sms = {"text": "【克拉里昂】您的验证码已发送", "vendor_template": only_in_params}
    await put_template(api, "hidden", category="verification", channels={"sms": sms})
    async with FakeAliyunSms() as fake:
        await put_provider(api, "aliyun-a", "sms", "aliyun_sms", aliyun_config(fake.url))
        await put_user(api, "u1", addresses={"sms": PHONE})
        missing = await api.post("/v1/messages", json={"template": "hidden", "to": "u1", "data": {}})
        filled = await send_one(api, "hidden", "u1", {"secret": "8642"})
        assert await drain(clarion) == 1
    assert missing.status_code == 202, missing.text
    [refused] = missing.json()["messages"]
    assert (refused["status"], refused["reason"]) == ("failed", "missing_variable: data.secret")
    [sent] = fake.sent
    assert sent.params == {"code": "8642"}
    assert (await message(api, filled))["deliveries"][0]["status"] == "sent"
