"""SMS replies in each vendor's own format, through ``POST /r/{provider}/replies``: Aliyun's SmsUp push and
Tencent's reply callback (proven by the URL's token), Twilio's incoming-message webhook (signed with
``X-Twilio-Signature``). A ``TD``/``STOP`` reply suppresses marketing SMS to the phone, in E.164 whatever form the
vendor wrote it in; a wrong proof is 401 and keeps nothing; the same reply sent again changes nothing."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import orjson
import sqlalchemy as sa

from clarion import bootstrap
from clarion.store import tables as t
from tests.acceptance.test_e2e_channels import put_provider
from tests.acceptance.test_e2e_sms_vendors import TOKEN, aliyun_config, tencent_config, twilio_config, vendor_side
from tests.fakes import twilio
from tests.fakes.twilio import callback_signature

__all__ = ["vendor_side"]  # the fixture, used by name


async def suppressed(clarion: bootstrap.Clarion) -> list[tuple[str, str, str]]:
    async with clarion.db.read() as conn:
        rows = (await conn.execute(sa.select(t.suppressions))).all()
    return [(r.address, r.source, r.category) for r in rows]


async def test_an_aliyun_smsup_td_unsubscribes_the_mainland_number(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    await put_provider(api, "aliyun-a", "sms", "aliyun_sms", aliyun_config("https://dysmsapi.aliyuncs.com"))
    pushed = orjson.dumps(
        [
            {
                "phone_number": "13912345678",
                "send_time": "2026-12-02 10:00:00",
                "content": "TD",
                "sign_name": "克拉里昂",
                "dest_code": "1234",
                "sequence_id": 998877,
            }
        ]
    )
    refused = await vendor_side.post("/r/aliyun-a/replies?token=wrong-token-0123456789", content=pushed)
    assert refused.status_code == 401
    assert await suppressed(clarion) == []
    taken = await vendor_side.post(f"/r/aliyun-a/replies?token={TOKEN}", content=pushed)
    again = await vendor_side.post(f"/r/aliyun-a/replies?token={TOKEN}", content=pushed)
    assert taken.json() == {"accepted": 1, "duplicates": 0, "unsubscribed": 1}
    assert again.json() == {"accepted": 0, "duplicates": 1, "unsubscribed": 0}
    assert await suppressed(clarion) == [("+8613912345678", "sms_reply", "marketing")]
    [reply] = (await api.get("/v1/sms/replies", params={"phone": "+8613912345678"})).json()["replies"]
    assert (reply["sign"], reply["to"], reply["provider"]) == ("克拉里昂", "1234", "aliyun-a")


async def test_a_tencent_reply_callback_unsubscribes_and_one_sent_twice_is_recognised(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    await put_provider(api, "tencent-a", "sms", "tencent_sms", tencent_config("https://sms.tencentcloudapi.com"))
    body = orjson.dumps(
        {
            "extend": "",
            "mobile": "13912345678",
            "nationcode": "86",
            "sign": "克拉里昂",
            "text": "退订",
            "time": 1764650000,
        }
    )
    assert (await vendor_side.post("/r/tencent-a/replies", content=body)).status_code == 401
    first = await vendor_side.post(f"/r/tencent-a/replies?token={TOKEN}", content=body)
    second = await vendor_side.post(f"/r/tencent-a/replies?token={TOKEN}", content=body)
    assert (first.json()["unsubscribed"], second.json()["duplicates"]) == (1, 1)
    assert await suppressed(clarion) == [("+8613912345678", "sms_reply", "marketing")]


async def test_a_signed_twilio_stop_unsubscribes_and_a_forged_one_is_refused(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    await put_provider(api, "twilio-a", "sms", "twilio", twilio_config("https://api.twilio.com"))
    url = f"{clarion.settings.public_url.rstrip('/')}/r/twilio-a/replies"
    params = {"MessageSid": "SM" + "1" * 32, "From": "+14155550100", "To": twilio.FROM_NUMBER, "Body": "STOP"}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    forged = callback_signature("not-the-auth-token", url, params)
    refused = await vendor_side.post(
        "/r/twilio-a/replies", content=urlencode(params), headers={**form, "X-Twilio-Signature": forged}
    )
    assert refused.status_code == 401
    good = callback_signature(twilio.AUTH_TOKEN, url, params)
    taken = await vendor_side.post(
        "/r/twilio-a/replies", content=urlencode(params), headers={**form, "X-Twilio-Signature": good}
    )
    assert taken.status_code == 200, taken.text
    assert taken.json()["unsubscribed"] == 1
    assert await suppressed(clarion) == [("+14155550100", "sms_reply", "marketing")]
