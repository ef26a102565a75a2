"""Voice end to end: an urgent template with voice content → ``POST /v1/messages`` → the call the fake Aliyun
recorded → the call-result push at ``POST /r/{provider}`` → ``delivered`` on ``GET /v1/messages/{id}``; and the
urgent-only rule where templates are saved."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from clarion.api.app import create_app
from tests.acceptance.test_e2e_channels import message, put_provider, send_one, statuses
from tests.conftest import drain, put_template, put_user
from tests.fakes.aliyun_voice import ACCESS_KEY_ID, ACCESS_KEY_SECRET, TEMPLATE, FakeAliyunVoice, voice_report

TOKEN = "voice-report-token-0123456789"
PHONE = "+8613800138000"
VOICE = {
    "text": "您的验证码是 {data.code}",
    "vendor_template": {"ali-voice": {"code": TEMPLATE, "params": {"code": "{data.code}"}}},
}


@pytest.fixture
async def vendor_side(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """The API as Aliyun calls it: no API key."""
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


async def voice_account(api: httpx.AsyncClient, url: str, **config: Any) -> None:
    options = {
        "access_key_id": ACCESS_KEY_ID,
        "access_key_secret": ACCESS_KEY_SECRET,
        "endpoint": url,
        "allow_private_networks": True,
        "timeout": 5,
        "receipt_token": TOKEN,
        **config,
    }
    await put_provider(api, "ali-voice", "voice", "aliyun_voice", options)


async def called(api: httpx.AsyncClient, clarion: bootstrap.Clarion, fake: FakeAliyunVoice) -> tuple[str, str]:
    """An urgent code sent by voice to u1: (message id, Aliyun's CallId)."""
    await voice_account(api, fake.url)
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "alarm", category="notification", priority="urgent", channels={"voice": VOICE})
    message_id = await send_one(api, "alarm", "u1", {"code": "4711"})
    assert await drain(clarion) == 1
    [call] = fake.calls
    return message_id, call.call_id


async def test_an_urgent_voice_message_is_called_and_delivered_by_the_call_result(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    async with FakeAliyunVoice() as fake:
        message_id, call_id = await called(api, clarion, fake)
    [call] = fake.calls
    assert (call.params["CalledNumber"], call.params["TtsCode"]) == ("13800138000", TEMPLATE)
    assert call.tts_param == {"code": "4711"}
    [delivery] = (await message(api, message_id))["deliveries"]
    assert (delivery["channel"], delivery["status"], delivery["provider_message_id"]) == ("voice", "sent", call_id)
    assert call.params["OutId"] == delivery["id"]

    report = voice_report(call_id, "200000", "用户接听", out_id=delivery["id"])
    pushed = await vendor_side.post(f"/r/ali-voice?token={TOKEN}", content=report)
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["accepted"] == 1

    detail = await message(api, message_id)
    [delivery] = detail["deliveries"]
    assert (detail["status"], delivery["status"]) == ("delivered", "delivered")
    assert statuses(delivery) == ["queued", "sending", "sent", "delivered"]
    assert delivery["timeline"][-1]["detail"]["vendor_status"] == "200000"


async def test_an_unanswered_call_is_undelivered_with_aliyuns_code(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    async with FakeAliyunVoice() as fake:
        message_id, call_id = await called(api, clarion, fake)
    pushed = await vendor_side.post(f"/r/ali-voice?token={TOKEN}", content=voice_report(call_id, "200005", "关机"))
    assert pushed.status_code == 200, pushed.text
    [delivery] = (await message(api, message_id))["deliveries"]
    assert delivery["status"] == "undelivered"
    assert "200005" in delivery["timeline"][-1]["reason"]


async def test_an_answered_call_is_delivered_by_the_receipt_poller_without_a_push(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    async with FakeAliyunVoice() as fake:
        message_id, call_id = await called(api, clarion, fake)
        assert clarion.poller is not None
        await clarion.poller.run_once()  # still ringing: nothing to apply
        assert (await message(api, message_id))["deliveries"][0]["status"] == "sent"
        fake.finish(call_id, "200000", "用户接听")
        done = await clarion.poller.run_once()
    assert (done.asked, done.tally.accepted, done.failed) == (1, 1, [])
    [delivery] = (await message(api, message_id))["deliveries"]
    assert delivery["status"] == "delivered"
    assert statuses(delivery) == ["queued", "sending", "sent", "delivered"]


async def test_a_call_result_without_the_token_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    async with FakeAliyunVoice() as fake:
        message_id, call_id = await called(api, clarion, fake)
    for query in ("", "?token=wrong-token-0123456789"):
        refused = await vendor_side.post(f"/r/ali-voice{query}", content=voice_report(call_id, "200000"))
        assert refused.status_code == 401, refused.text
    [delivery] = (await message(api, message_id))["deliveries"]
    assert delivery["status"] == "sent"


async def test_a_template_calling_on_voice_below_urgent_is_refused_naming_priority(api: httpx.AsyncClient) -> None:
    body = {"name": "n", "category": "notification", "priority": "high", "channels": {"voice": VOICE}}
    refused = await api.put("/v1/templates/not-urgent", json=body)
    assert refused.status_code == 422, refused.text
    assert "priority" in refused.text and "urgent" in refused.text
    assert (await api.get("/v1/templates/not-urgent")).status_code == 404

    allowed = await api.put("/v1/templates/not-urgent", json={**body, "policy": {"voice_below_urgent": True}})
    assert allowed.status_code in (200, 201), allowed.text
    assert allowed.json()["policy"]["voice_below_urgent"] is True


async def test_voice_content_is_its_own_and_never_adapted_from_the_default(api: httpx.AsyncClient) -> None:
    default = {"title": "Alarm", "body": "db-1 is down"}
    for channels in ({"default": default, "targets": ["voice"]}, {"default": default, "voice": {}}):
        body = {"name": "n", "category": "notification", "priority": "urgent", "channels": channels}
        refused = await api.put("/v1/templates/adapted-voice", json=body)
        assert refused.status_code == 422, refused.text
        assert "voice" in refused.text
    missing_text = {"vendor_template": VOICE["vendor_template"]}
    body = {"name": "n", "category": "notification", "priority": "urgent", "channels": {"voice": missing_text}}
    refused = await api.put("/v1/templates/adapted-voice", json=body)
    assert refused.status_code == 422 and "channels.voice.text" in refused.text


async def test_the_probe_calls_with_the_given_voice_content_and_needs_one(api: httpx.AsyncClient) -> None:
    async with FakeAliyunVoice() as fake:
        await voice_account(api, fake.url)
        without = await api.post("/v1/providers/ali-voice/test", json={"address": PHONE})
        content = {"text": "测试", "vendor_template": {"*": {"code": TEMPLATE, "params": {"code": "0000"}}}}
        probe = await api.post("/v1/providers/ali-voice/test", json={"address": PHONE, "content": content})
    assert without.status_code == 422 and "content" in without.text
    assert probe.status_code == 200 and probe.json()["ok"] is True, probe.text
    assert probe.json()["provider_message_id"] == fake.calls[0].call_id


async def test_a_saved_account_shows_its_secrets_masked(api: httpx.AsyncClient) -> None:
    await voice_account(api, "https://dyvmsapi.aliyuncs.com", allow_private_networks=False)
    shown = (await api.get("/v1/providers/ali-voice")).json()["config"]
    assert shown["access_key_secret"] == "********" and shown["receipt_token"] == "********"
    bad = await api.put(
        "/v1/providers/ali-voice",
        json={"channel": "voice", "kind": "aliyun_voice", "config": {"access_key_id": "x"}},
    )
    assert bad.status_code == 422 and "config.access_key_secret" in bad.text
