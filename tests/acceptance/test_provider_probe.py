"""``POST /v1/providers/{name}/test``: one probe through an account, reporting the vendor's answer as it was —
the message id, or the vendor's code, whether a delivery would retry and whether the account is at fault — for
``admin`` only, audited, with nothing stored as a message."""

from __future__ import annotations

import sqlalchemy as sa

from clarion import bootstrap
from clarion.store import tables as t
from tests.integration.loopback import LoopbackServer, Reply


async def sms_account(api, url: str, **config: object) -> None:
    body = {"url": url + "/send", "allow_private_networks": True, "status_path": "status", **config}
    answer = await api.put("/v1/providers/vendor", json={"channel": "sms", "kind": "sms_http", "config": body})
    assert answer.status_code == 201, answer.text


async def test_a_probe_reports_the_vendor_message_id_and_stores_no_message(api, clarion: bootstrap.Clarion) -> None:
    async with LoopbackServer(Reply(200, {"status": "ok", "message_id": "V-1"})) as server:
        await sms_account(api, server.url)
        answer = await api.post("/v1/providers/vendor/test", json={"address": "+8613800138000"})
    assert answer.status_code == 200, answer.text
    probe = answer.json()
    assert (probe["ok"], probe["provider_message_id"], probe["status"], probe["error"]) == (True, "V-1", "sent", None)
    [request] = server.requests
    assert request.json() == {"to": "+8613800138000", "text": "Clarion test message"}
    async with clarion.db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(t.messages))).scalar() == 0
        actions = (await conn.execute(sa.select(t.audit_log.c.action, t.audit_log.c.detail))).all()
    assert ("provider.test", {"channel": "sms", "ok": True, "error": None}) in [tuple(a) for a in actions]


async def test_a_probe_reports_the_vendor_code_and_whether_it_would_retry(api) -> None:
    script = [Reply(200, {"status": "fail", "code": "isv.MOBILE_NUMBER_ILLEGAL"}), Reply(503)]
    async with LoopbackServer(*script) as server:
        await sms_account(api, server.url, error_path="code")
        refused = (await api.post("/v1/providers/vendor/test", json={"address": "+8613800138000"})).json()
        unavailable = (await api.post("/v1/providers/vendor/test", json={"address": "+8613800138000"})).json()
    assert refused["ok"] is False
    assert refused["error"]["code"] == "isv.MOBILE_NUMBER_ILLEGAL"
    assert (refused["error"]["transient"], refused["error"]["misconfigured"]) == (False, False)
    assert unavailable["error"]["transient"] is True


async def test_a_probe_takes_the_given_content_and_refuses_bad_input(api) -> None:
    async with LoopbackServer(Reply(200, {"status": "ok", "message_id": "V-2"})) as server:
        await sms_account(api, server.url)
        given = await api.post("/v1/providers/vendor/test", json={"address": "+15550100", "content": {"text": "hi"}})
        assert given.status_code == 200
        assert server.requests[0].json()["text"] == "hi"
        missing = await api.post("/v1/providers/vendor/test", json={"content": {"text": "hi"}})
        unknown = await api.post("/v1/providers/nobody/test", json={"address": "+15550100"})
    assert missing.status_code == 422 and "address" in missing.text
    assert unknown.status_code == 404


async def test_a_probe_needs_admin(api, clarion: bootstrap.Clarion) -> None:
    await clarion.keys.create("sender", ("sender",), key="ck_sender_probe_key_000000000000")
    answer = await api.post(
        "/v1/providers/file/test",
        json={"address": "+15550100", "channel": "sms"},
        headers={"Authorization": "Bearer ck_sender_probe_key_000000000000"},
    )
    assert answer.status_code == 403, answer.text
