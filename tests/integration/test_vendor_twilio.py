"""The ``twilio`` kind against a fake Messages API on loopback that checks Basic credentials, and status callbacks
signed as Twilio signs them."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from clarion.channels import base
from clarion.channels.twilio import ERRORS, TwilioProvider, signature
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.fakes import twilio
from tests.fakes.twilio import FakeTwilio, callback_signature, status_callback

PHONE = "+14155550100"
CALLBACK = "https://clarion.example.com/r/twilio-a"


def provider(url: str, **config: Any) -> TwilioProvider:
    options = {
        "account_sid": twilio.ACCOUNT_SID,
        "auth_token": twilio.AUTH_TOKEN,
        "from_number": twilio.FROM_NUMBER,
        "status_callback": CALLBACK,
        "endpoint": url,
        "allow_private_networks": True,
        "timeout": 5,
        **config,
    }
    return TwilioProvider(TwilioProvider.Config(**options), name="twilio-a")


def sms(n: int = 1, phone: str = PHONE, text: str = "Your code is 4711") -> Outgoing:
    return Outgoing(f"dlv-{n}", f"msg-{n}", f"u{n}", Channel.SMS, phone, {"text": text})


def test_the_signature_is_the_one_twilio_publishes_for_its_example() -> None:
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
        "Caller": "+14158675309",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert callback_signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


async def test_a_message_is_posted_form_encoded_with_basic_auth_and_the_status_callback() -> None:
    async with FakeTwilio() as fake:
        sender = provider(fake.url)
        [result] = await sender.send([sms(text="Héllo & 你好 +1")])
        await sender.close()
    assert result.error is None, result.error
    [(sid, form)] = fake.messages.items()
    assert result.provider_message_id == sid and sid.startswith("SM")
    assert form == {"To": PHONE, "Body": "Héllo & 你好 +1", "From": twilio.FROM_NUMBER, "StatusCallback": CALLBACK}
    [request] = fake.received
    assert request.path == f"/2010-04-01/Accounts/{twilio.ACCOUNT_SID}/Messages.json"
    user = base64.b64decode(request.headers["Authorization"].removeprefix("Basic ")).decode().partition(":")[0]
    assert user == twilio.ACCOUNT_SID


async def test_an_api_key_and_a_messaging_service_are_used_when_configured() -> None:
    async with FakeTwilio() as fake:
        sender = provider(
            fake.url,
            api_key_sid=twilio.API_KEY_SID,
            api_key_secret=twilio.API_KEY_SECRET,
            from_number=None,
            messaging_service_sid=twilio.MESSAGING_SERVICE_SID,
            status_callback=None,
        )
        [result] = await sender.send([sms()])
        await sender.close()
    assert result.error is None, result.error
    [form] = fake.messages.values()
    assert form == {"To": PHONE, "Body": "Your code is 4711", "MessagingServiceSid": twilio.MESSAGING_SERVICE_SID}
    user = base64.b64decode(fake.received[0].headers["Authorization"].removeprefix("Basic ")).decode()
    assert user == f"{twilio.API_KEY_SID}:{twilio.API_KEY_SECRET}"


async def test_a_wrong_auth_token_is_refused_with_20003_and_the_account_is_misconfigured() -> None:
    async with FakeTwilio() as fake:
        sender = provider(fake.url, auth_token="wrong-token")
        [result] = await sender.send([sms()])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == ("20003", True)
    assert fake.messages == {}


async def test_the_fake_checks_the_recipient_and_the_sender() -> None:
    async with FakeTwilio() as fake:
        sender = provider(fake.url)
        not_ours = provider(fake.url, from_number="+15005550001")
        [bad_to] = await sender.send([sms(1, phone="+1")])
        [bad_from] = await not_ours.send([sms(2)])
        await sender.close()
        await not_ours.close()
    assert isinstance(bad_to.error, PermanentSendError) and bad_to.error.code == "invalid_address"
    assert isinstance(bad_from.error, PermanentSendError)
    assert (bad_from.error.code, bad_from.error.misconfigured) == ("21606", True)
    assert "not a valid, SMS-capable number" in bad_from.error.message


@pytest.mark.parametrize(("code", "meaning"), sorted(ERRORS.items()))
async def test_each_twilio_code_maps_to_its_outcome(code: int, meaning: str) -> None:
    status = {"transient": 429 if code in (20429, 14107) else 503, "misconfigured": 401}.get(meaning, 400)
    async with FakeTwilio() as fake:
        fake.fail_next(status, code, f"the vendor says {code}")
        sender = provider(fake.url)
        [result] = await sender.send([sms()])
        await sender.close()
    error = result.error
    assert error is not None and error.code == str(code) and f"the vendor says {code}" in error.message
    if meaning == "transient":
        assert isinstance(error, TransientSendError)
    else:
        assert isinstance(error, PermanentSendError) and error.misconfigured is (meaning == "misconfigured")


async def test_an_unknown_code_goes_by_its_http_status() -> None:
    async with FakeTwilio() as fake:
        fake.fail_next(429, 99999, "slow down")
        fake.fail_next(500, 99998, "oops")
        fake.fail_next(400, 99997, "no")
        sender = provider(fake.url)
        results = [(await sender.send([sms(n)]))[0].error for n in range(3)]
        await sender.close()
    assert [type(e) for e in results] == [TransientSendError, TransientSendError, PermanentSendError]
    assert [e.code for e in results if e] == ["99999", "99998", "99997"]


def signed(params: dict[str, str], url: str = CALLBACK, token: str = twilio.AUTH_TOKEN) -> base.Callback:
    return base.Callback(
        urlencode(params).encode(),
        headers={"x-twilio-signature": callback_signature(token, url, params)},
        content_type="application/x-www-form-urlencoded",
        url=url,
    )


def test_a_signed_status_callback_is_read_and_intermediate_statuses_are_ignored() -> None:
    sender = provider("http://127.0.0.1:1")
    [delivered] = sender.receipts(signed(status_callback("SM1", "delivered", PHONE))).receipts
    [failed] = sender.receipts(signed(status_callback("SM2", "undelivered", PHONE, error_code="30003"))).receipts
    sent = sender.receipts(signed(status_callback("SM3", "sent", PHONE)))
    assert (delivered.provider_message_id, delivered.event) == ("SM1", receipts.Event.DELIVERED)
    assert (failed.event, failed.detail) == (
        receipts.Event.UNDELIVERED,
        {"vendor_status": "undelivered", "vendor_code": "30003"},
    )
    assert (sent.receipts, sent.ignored) == ([], 1)


def test_a_callback_signed_wrongly_or_for_another_url_or_altered_is_refused() -> None:
    sender = provider("http://127.0.0.1:1")
    params = status_callback("SM1", "delivered", PHONE)
    wrong_token = signed(params, token="not-the-token")
    good = signed(params)
    elsewhere = signed(params, url="https://elsewhere.example.com/r/twilio-a")
    other_url = base.Callback(good.body, headers=elsewhere.headers, url=good.url)
    altered = base.Callback(good.body.replace(b"delivered", b"failed"), headers=good.headers, url=good.url)
    unsigned = base.Callback(good.body, url=good.url)
    for callback in (wrong_token, other_url, altered, unsigned):
        with pytest.raises(base.RefusedCallback):
            sender.receipts(callback)
    assert dict(parse_qsl(good.body.decode()))["MessageStatus"] == "delivered"


def test_without_a_configured_callback_the_public_url_of_the_callback_is_what_is_checked() -> None:
    sender = provider("http://127.0.0.1:1", status_callback=None)
    public = "https://public.example.com/r/twilio-a?x=1"
    [receipt] = sender.receipts(signed(status_callback("SM1", "failed", PHONE), url=public)).receipts
    assert receipt.event is receipts.Event.UNDELIVERED


def test_config_needs_exactly_one_sender_and_a_whole_api_key() -> None:
    common = {"account_sid": twilio.ACCOUNT_SID, "auth_token": "t"}
    with pytest.raises(ValueError, match="from_number and messaging_service_sid"):
        TwilioProvider.Config(**common)
    with pytest.raises(ValueError, match="api_key_sid and api_key_secret"):
        TwilioProvider.Config(**common, from_number="+15005550006", api_key_sid=twilio.API_KEY_SID)
    with pytest.raises(ValueError, match="account_sid"):
        TwilioProvider.Config(account_sid="nope", auth_token="t", from_number="+1")
    assert TwilioProvider.Config.secret_fields == {"auth_token", "api_key_secret"}
