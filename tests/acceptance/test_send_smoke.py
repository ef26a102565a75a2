"""The triggered path end to end on the embedded providers: API → outbox → worker → inbox and file sink."""

from __future__ import annotations

import gc

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user, sink


async def test_send_reaches_inbox_and_file_sink(api, clarion: bootstrap.Clarion) -> None:
    await put_user(api, "u1", attributes={"name": "Li"}, addresses={"sms": "+8613800138000"})
    await put_template(
        api,
        "code",
        category="verification",
        priority="urgent",
        channels={
            "sms": {"text": "{name}, your code is ${data.code}"},
            "inbox": {"title": "Code", "body": "Code {data.code}"},
        },
    )
    response = await api.post("/v1/messages", json={"template": "code", "to": "u1", "data": {"code": "4711"}})
    assert response.status_code == 202, response.text
    [message] = response.json()["messages"]
    assert message["status"] == "queued"

    assert await drain(clarion) == 2

    [record] = sink(clarion)
    assert record["content"]["text"] == "Li, your code is 4711"
    assert record["address"] == "+8613800138000"
    inbox = (await api.get("/v1/users/u1/inbox")).json()["items"]
    assert [i["body"] for i in inbox] == ["Code 4711"]
    detail = (await api.get(f"/v1/messages/{message['id']}")).json()
    assert detail["status"] == "delivered"
    sms = next(d for d in detail["deliveries"] if d["channel"] == "sms")
    assert [e["status"] for e in sms["timeline"]] == ["queued", "sending", "sent"]
    assert sms["provider_message_id"] == f"file:{sms['id']}"


async def test_a_started_process_tunes_the_garbage_collector_unless_told_not_to(settings) -> None:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    services = bootstrap.build(settings.model_copy(update={"tune_gc": True}))
    try:
        await services.start(workers=0)
        assert gc.get_freeze_count() > 10_000  # modules, the app, the segment index …
        assert gc.get_threshold()[0] == 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        await services.close()
    services = bootstrap.build(settings)  # tune_gc=False: the tests' own setting
    try:
        await services.start(workers=0)
        assert gc.get_freeze_count() == 0
    finally:
        await services.close()
