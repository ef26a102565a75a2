"""The generic HTTP SMS provider against a scripted vendor on loopback."""

from __future__ import annotations

import pytest

from clarion.channels import masking, sms_http
from clarion.channels.sms_http import SmsHttpProvider, dig, fill
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.integration.loopback import LoopbackServer, Recorded, Reply

TEMPLATE = {
    "account": "acme",
    "message": {"content": "【{sender}】{text}", "to": ["{phone}"], "priority": 1},
    "client_ref": "{delivery_id}",
    "untouched": "{user_id} {0} {{phone}}",
    "flags": [True, None, {"ref": "x-{delivery_id}"}],
}


def provider(url: str, **config: object) -> SmsHttpProvider:
    options = {"url": url + "/v1/sms", "allow_private_networks": True, "timeout": 5, **config}
    return SmsHttpProvider(SmsHttpProvider.Config(**options), name="vendor")


def sms(n: int, text: str = "您的验证码是 123456", phone: str = "+8613800138000") -> Outgoing:
    return Outgoing(
        delivery_id=f"dlv-{n}",
        message_id=f"msg-{n}",
        user_id=f"u{n}",
        channel=Channel.SMS,
        address=phone,
        content={"text": text},
    )


async def test_template_substitution_headers_and_nested_message_id() -> None:
    reply = Reply(200, {"data": {"results": [{"sid": "SM-42"}]}})
    async with LoopbackServer(reply) as server:
        sender = provider(
            server.url,
            body=TEMPLATE,
            sender="阿克米",
            headers={"Authorization": "Token t0p", "clarion-delivery-id": "spoofed"},
            message_id_path="data.results.0.sid",
        )
        [result] = await sender.send([sms(1, text='含"引号"和\\反斜杠 {phone}')])
        await sender.close()

    assert result.error is None
    assert result.provider_message_id == "SM-42"
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/sms")
    assert request.headers.getall("Clarion-Delivery-Id") == ["dlv-1"]
    assert request.headers["Authorization"] == "Token t0p"
    assert request.json() == {
        "account": "acme",
        "message": {
            "content": '【阿克米】含"引号"和\\反斜杠 {phone}',
            "to": ["+8613800138000"],
            "priority": 1,
        },
        "client_ref": "dlv-1",
        "untouched": "{user_id} {0} {+8613800138000}",
        "flags": [True, None, {"ref": "x-dlv-1"}],
    }


async def test_429_then_200_across_two_calls() -> None:
    replies = (
        Reply(429, {"error": "slow down"}, headers={"Retry-After": "3"}),
        Reply(200, {"message_id": "m-1"}),
    )
    async with LoopbackServer(*replies) as server:
        sender = provider(server.url)
        [first] = await sender.send([sms(1)])
        [second] = await sender.send([sms(1)])
        await sender.close()

    assert isinstance(first.error, TransientSendError)
    assert first.error.code == "http_429" and first.error.retry_after == 3.0
    assert second.error is None and second.provider_message_id == "m-1"
    assert [r.json() for r in server.requests] == [{"to": "+8613800138000", "text": "您的验证码是 123456"}] * 2


def vendor(request: Recorded) -> Reply:
    """Answers by the phone number so concurrent requests get deterministic replies."""
    phone = request.json()["to"]
    answers = {
        "+4915100000001": Reply(200, {"status": "ok", "id": "v-1"}),
        "+4915100000002": Reply(200, {"status": "fail", "error": {"code": "INVALID_NUMBER"}}),
        "+4915100000003": Reply(200, {"status": "fail", "error": {"code": "THROTTLED"}}),
        "+4915100000004": Reply(500, {"status": "fail"}),
        "+4915100000005": Reply(400, {"error": {"code": "BAD_SIGN"}}),
        "+4915100000006": Reply(400, {"error": {"code": "THROTTLED"}}),
        "+4915100000007": Reply(200, body=b"<html>ok?</html>", headers={"Content-Type": "text/html"}),
    }
    return answers[phone]


async def test_vendor_errors_permanent_or_transient_by_code() -> None:
    async with LoopbackServer(handler=vendor) as server:
        sender = provider(
            server.url,
            message_id_path="id",
            status_path="status",
            success_values=["ok"],
            error_path="error.code",
            transient_codes=["THROTTLED"],
        )
        batch = [sms(n, phone=f"+491510000000{n}") for n in range(1, 8)]
        results = await sender.send(batch)
        await sender.close()

    by_id = {r.delivery_id: r for r in results}
    assert len(results) == 7 and len(server.requests) == 7
    assert by_id["dlv-1"].error is None and by_id["dlv-1"].provider_message_id == "v-1"
    expected = {
        "dlv-2": (PermanentSendError, "INVALID_NUMBER"),
        "dlv-3": (TransientSendError, "THROTTLED"),
        "dlv-4": (TransientSendError, "http_500"),
        "dlv-5": (PermanentSendError, "http_400"),
        "dlv-6": (TransientSendError, "THROTTLED"),
        "dlv-7": (PermanentSendError, "invalid_response"),
    }
    for delivery_id, (kind, code) in expected.items():
        error = by_id[delivery_id].error
        assert type(error) is kind, delivery_id
        assert error.code == code, delivery_id
        assert by_id[delivery_id].provider_message_id is None


async def test_error_path_alone_detects_a_vendor_error() -> None:
    replies = (Reply(200, {"code": 0, "sid": "a"}), Reply(200, {"code": 1021, "msg": "blacklisted"}))
    async with LoopbackServer(*replies) as server:
        sender = provider(server.url, error_path="code", message_id_path="sid")
        [ok] = await sender.send([sms(1)])
        [blocked] = await sender.send([sms(2)])
        await sender.close()

    assert ok.error is None and ok.provider_message_id == "a"
    assert isinstance(blocked.error, PermanentSendError) and blocked.error.code == "1021"


async def test_bad_addresses_and_urls_never_reach_the_vendor() -> None:
    async with LoopbackServer() as server:
        sender = provider(server.url)
        results = await sender.send([sms(1, phone="13800138000"), sms(2, text=""), sms(3)])
        private = provider(server.url, allow_private_networks=False)
        [refused] = await private.send([sms(4)])
        await sender.close()
        await private.close()

    assert [type(r.error) for r in results] == [PermanentSendError, PermanentSendError, type(None)]
    assert [r.error.code for r in results[:2]] == ["invalid_address", "invalid_content"]
    assert results[2].provider_message_id == "dlv-3"  # no message_id in the answer: our id stands in
    assert isinstance(refused.error, PermanentSendError) and refused.error.code == "url_not_allowed"
    assert len(server.requests) == 1


async def test_refused_connection_is_transient() -> None:
    async with LoopbackServer() as server:
        url = server.url
    sender = provider(url)
    [result] = await sender.send([sms(1)])
    await sender.close()
    assert isinstance(result.error, TransientSendError) and result.error.code == "connect_error"


def test_helpers_and_config() -> None:
    assert fill({"a": ["{text}", {"b": "{nope}"}], "{text}": 3}, {"text": "$1 \\g<0>"}) == {
        "a": ["$1 \\g<0>", {"b": "{nope}"}],
        "{text}": 3,
    }
    assert dig({"a": [{"b": 5}]}, "a.0.b") == 5
    assert dig({"a": [1]}, "a.3") is sms_http._MISSING
    assert dig({"a": 1}, "a.b") is sms_http._MISSING
    shown = masking.mask(SmsHttpProvider.Config, {"url": "https://x?k=v", "headers": {"Authorization": "t"}})
    assert shown == {"url": "https://x?k=********", "headers": {"Authorization": "********"}}
    assert SmsHttpProvider.Config(url="https://x", method="put").method == "PUT"
    with pytest.raises(ValueError, match="method"):
        SmsHttpProvider.Config(url="https://x", method="GET")
    for url in ("ftp://vendor.example.com/", "vendor.example.com/send", "https:///send"):
        with pytest.raises(ValueError, match="http"):
            SmsHttpProvider.Config(url=url)
