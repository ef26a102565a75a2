"""Alert rules through the HTTP API, judged by the alert loop, notified through a real robot on loopback.

An SMS vendor on loopback takes every send; its signed receipts (``POST /r/vendor``) say most did not arrive, so
the vendor's delivery rate drops under the rule's threshold: the alert fires once, posted to a fake DingTalk
that recomputes the robot's sign; it holds without repeating, and recovers with a notice when later messages
arrive. The loop is driven round by round with its clock (``AlertLoop.run_once``), never by sleeping. The
rules' validation, roles and audit, and ``GET /v1/alerts``, are checked on the way. Every test runs on SQLite
and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.pipeline import alerting
from clarion.store import tables as t
from tests.acceptance.test_e2e_channels import put_provider
from tests.acceptance.test_e2e_dingtalk_feishu import robot_config
from tests.acceptance.test_receipts import RECEIPTS, SECRET, signed
from tests.conftest import drain, put_template, put_user
from tests.fakes.dingtalk import FakeDingTalk
from tests.integration.loopback import LoopbackServer, Recorded, Reply

EDITOR_KEY = "clk_ed_the_editor_000000000000000"
SENDER_KEY = "clk_sam_the_sender_00000000000000"
RATE_RULE = {
    "kind": "delivery_rate",
    "condition": {"scope": {"provider": "vendor"}, "threshold": 0.8, "min_sent": 5, "window_minutes": 60},
    "notify": {"provider": "ops-robot"},
    "repeat_minutes": 30,
}


@pytest.fixture
async def vendor_side(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """The API as the SMS vendor calls it with receipts: no API key."""
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


@pytest.fixture
async def sms_vendor(api: httpx.AsyncClient) -> AsyncIterator[LoopbackServer]:
    """A vendor that takes every SMS, answering ids v-1, v-2, …; the account ``vendor`` sends to it."""
    ids = itertools.count(1)

    def take(request: Recorded) -> Reply:
        return Reply(200, {"data": {"id": f"v-{next(ids)}"}})

    async with LoopbackServer(handler=take) as server:
        config = {
            "url": f"{server.url}/send",
            "allow_private_networks": True,
            "message_id_path": "data.id",
            "timeout": 5,
            "receipts": RECEIPTS,
            "receipt_secret": SECRET,
        }
        await put_provider(api, "vendor", "sms", "sms_http", config)
        await put_template(api, "note", channels={"sms": {"text": "note {data.n}"}})
        yield server


async def send_and_receipt(
    api: httpx.AsyncClient, vendor_side: httpx.AsyncClient, clarion: bootstrap.Clarion, outcomes: list[str]
) -> None:
    """One SMS to a new user per outcome, sent through the vendor, then its receipt (``DELIVRD``/``UNDELIV``)."""
    start = len(await sent_ids(clarion))
    users = [f"u{start + i}" for i in range(len(outcomes))]
    for i, user in enumerate(users):
        await put_user(api, user, addresses={"sms": f"+86138001{start + i:05d}"})
    answer = await api.post("/v1/messages", json={"template": "note", "to": users, "data": {"n": 1}})
    assert answer.status_code == 202, answer.text
    assert await drain(clarion) == len(users)
    for n, stat in enumerate(outcomes, start=start + 1):
        posted = await vendor_side.post("/r/vendor", **signed({"msgid": f"v-{n}", "stat": stat}))
        assert posted.json()["accepted"] == 1, posted.text


async def sent_ids(clarion: bootstrap.Clarion) -> list[str]:
    async with clarion.db.read() as conn:
        return list((await conn.execute(sa.select(t.deliveries.c.provider_message_id))).scalars())


def loop_at(clarion: bootstrap.Clarion, at: datetime) -> alerting.AlertLoop:
    assert clarion.alerts is not None
    clarion.alerts.clock = lambda: at
    return clarion.alerts


async def history(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    answer = await api.get("/v1/alerts", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["alerts"]


async def test_a_delivery_rate_drop_fires_once_holds_and_recovers_through_a_dingtalk_robot(
    api: httpx.AsyncClient,
    clarion: bootstrap.Clarion,
    vendor_side: httpx.AsyncClient,
    sms_vendor: LoopbackServer,
) -> None:
    async with FakeDingTalk() as robot:
        await put_provider(api, "ops-robot", "dingtalk", "dingtalk_robot", robot_config(robot))
        put = await api.put("/v1/alert-rules/vendor-rate", json=RATE_RULE)
        assert put.status_code == 201, put.text
        now = datetime.now(UTC)

        await send_and_receipt(api, vendor_side, clarion, ["DELIVRD"] * 2 + ["UNDELIV"] * 8)
        fired = await loop_at(clarion, now).run_once()
        assert [n["action"] for n in fired.notices] == ["fire"]
        [post] = robot.robot_posts  # the fake checked the robot's sign before taking it
        assert post["markdown"]["title"] == "[Clarion] Alert: vendor-rate"
        assert "delivery rate of provider vendor 20.0% over 60 min, below 80.0%" in post["markdown"]["text"]

        for minutes in (1, 10, 29):  # still below, within repeat_minutes: no second notice
            held = await loop_at(clarion, now + timedelta(minutes=minutes)).run_once()
            assert held.taken and held.judged == 1 and held.notices == []
        assert len(robot.robot_posts) == 1

        await send_and_receipt(api, vendor_side, clarion, ["DELIVRD"] * 30)  # 32 of 40: 80 %
        recovered = await loop_at(clarion, now + timedelta(minutes=30)).run_once()
        assert [n["action"] for n in recovered.notices] == ["recover"]
        assert len(robot.robot_posts) == 2
        notice = robot.robot_posts[1]["markdown"]
        assert notice["title"] == "[Clarion] Recovered: vendor-rate"
        assert "recovered: delivery rate of provider vendor 80.0% over 60 min, within limits" in notice["text"]

        quiet = await loop_at(clarion, now + timedelta(minutes=31)).run_once()
        assert quiet.notices == [] and len(robot.robot_posts) == 2

    listed = await history(api)
    assert [(a["action"], a["notified"], a["subject"]) for a in listed] == [
        ("recover", "sent", "provider:vendor"),
        ("fire", "sent", "provider:vendor"),
    ]
    assert listed[1]["value"] == pytest.approx(0.2) and listed[0]["value"] == pytest.approx(0.8)
    assert listed[1]["error"] is None and listed[1]["rule"] == "vendor-rate"
    assert [a["action"] for a in await history(api, rule="vendor-rate", limit=1)] == ["recover"]
    assert await history(api, rule="other") == []
    later = (datetime.fromisoformat(listed[0]["at"]) + timedelta(seconds=1)).isoformat()
    assert await history(api, since=later) == []
    assert [a["action"] for a in await history(api, since=listed[0]["at"])] == ["recover"]


async def test_a_notice_the_robot_refuses_is_recorded_failed_and_sent_again_next_round(
    api: httpx.AsyncClient,
    clarion: bootstrap.Clarion,
    vendor_side: httpx.AsyncClient,
    sms_vendor: LoopbackServer,
) -> None:
    async with FakeDingTalk() as robot:
        await put_provider(api, "ops-robot", "dingtalk", "dingtalk_robot", robot_config(robot))
        assert (await api.put("/v1/alert-rules/vendor-rate", json=RATE_RULE)).status_code == 201
        await send_and_receipt(api, vendor_side, clarion, ["UNDELIV"] * 6)
        robot.fail_next_robot(400101, "robot stopped")
        now = datetime.now(UTC)
        first = await loop_at(clarion, now).run_once()
        assert [(n["action"], n["notified"]) for n in first.notices] == [("fire", "failed")]
        assert "400101" in first.notices[0]["error"] and robot.robot_posts == []

        second = await loop_at(clarion, now + timedelta(minutes=1)).run_once()
        assert [(n["action"], n["notified"]) for n in second.notices] == [("repeat", "sent")]
        assert len(robot.robot_posts) == 1
        third = await loop_at(clarion, now + timedelta(minutes=2)).run_once()
        assert third.notices == []
    listed = await history(api)
    assert [(a["action"], a["notified"]) for a in listed] == [("repeat", "sent"), ("fire", "failed")]
    assert "DingTalk errcode 400101: robot stopped" in listed[1]["error"]


async def test_a_rule_is_stored_read_replaced_and_deleted_by_an_admin_with_every_change_audited(
    api: httpx.AsyncClient, sms_vendor: LoopbackServer
) -> None:
    await put_provider(api, "ops-robot", "dingtalk", "dingtalk_robot", {"access_token": "t", "secret": "s"})
    created = await api.put("/v1/alert-rules/vendor-rate", json=RATE_RULE)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["condition"] == {
        "scope": {"provider": "vendor"},
        "threshold": 0.8,
        "min_sent": 5,
        "window_minutes": 60,
    }
    assert (rule["notify"], rule["repeat_minutes"], rule["enabled"]) == (
        {"provider": "ops-robot", "to": None},
        30,
        True,
    )

    replaced = await api.put("/v1/alert-rules/vendor-rate", json={**RATE_RULE, "enabled": False})
    assert (replaced.status_code, replaced.json()["enabled"]) == (200, False)
    assert (await api.get("/v1/alert-rules/vendor-rate")).json()["enabled"] is False
    queue = {"kind": "urgent_queue_age", "condition": {"seconds": 120}, "notify": {"provider": "ops-robot"}}
    assert (await api.put("/v1/alert-rules/queue", json=queue)).status_code == 201
    listed = (await api.get("/v1/alert-rules")).json()["rules"]
    assert [(r["key"], r["kind"]) for r in listed] == [("queue", "urgent_queue_age"), ("vendor-rate", "delivery_rate")]
    assert listed[0]["condition"] == {"seconds": 120}

    assert (await api.delete("/v1/alert-rules/vendor-rate")).status_code == 204
    missing = await api.get("/v1/alert-rules/vendor-rate")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert (await api.delete("/v1/alert-rules/vendor-rate")).status_code == 404

    audit = (await api.get("/v1/audit", params={"subject": "alert_rule:vendor-rate"})).json()["entries"]
    assert [e["action"] for e in audit] == ["alert_rule.delete", "alert_rule.update", "alert_rule.create"]
    assert audit[2]["detail"]["condition"]["threshold"] == 0.8
    assert audit[0]["detail"]["before"]["enabled"] is False


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({**RATE_RULE, "condition": {"min_sent": 5}}, "condition.threshold", "invalid_alert"),
        ({**RATE_RULE, "condition": {"threshold": 1.5}}, "condition.threshold", "invalid_alert"),
        ({**RATE_RULE, "condition": {"threshold": 0.9, "seconds": 5}}, "condition", "invalid_alert"),
        ({**RATE_RULE, "condition": {"threshold": 0.9, "scope": {"department": "x"}}}, "condition.scope", None),
        ({**RATE_RULE, "kind": "weather"}, "kind", "invalid_input"),
        ({**RATE_RULE, "repeat_minutes": -1}, "repeat_minutes", "invalid_input"),
        ({**RATE_RULE, "notify": {"provider": "nobody"}}, "notify.provider", "unknown_provider"),
        ({**RATE_RULE, "notify": {"provider": "vendor"}}, "notify.provider", "cannot_notify"),
        ({**RATE_RULE, "notify": {"provider": "webhook"}}, "notify.to", "invalid_alert"),
        ({**RATE_RULE, "notify": {"provider": "webhook", "to": "ftp://x"}}, "notify.to", "invalid_alert"),
        ({**RATE_RULE, "notify": {"provider": "mail", "to": "ops"}}, "notify.to", "invalid_alert"),
    ],
)
async def test_a_rule_that_cannot_be_judged_or_notified_is_refused_naming_the_field(
    api: httpx.AsyncClient, sms_vendor: LoopbackServer, body: dict[str, Any], field: str, code: str | None
) -> None:
    await put_provider(api, "ops-robot", "dingtalk", "dingtalk_robot", {"access_token": "t", "secret": "s"})
    await put_provider(api, "mail", "email", "smtp", {"host": "smtp.example.com", "sender": "a@example.com"})
    answer = await api.put("/v1/alert-rules/bad", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert field in error["message"]
    assert code is None or error["code"] == code
    assert (await api.get("/v1/alert-rules/bad")).status_code == 404
    assert (await api.get("/v1/audit", params={"subject": "alert_rule:bad"})).json()["entries"] == []


async def test_rules_need_admin_and_the_history_admin_or_editor(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, sms_vendor: LoopbackServer
) -> None:
    await clarion.keys.create("ed", ("editor",), key=EDITOR_KEY)
    await clarion.keys.create("sam", ("sender",), key=SENDER_KEY)
    await put_provider(api, "ops-robot", "dingtalk", "dingtalk_robot", {"access_token": "t", "secret": "s"})
    assert (await api.put("/v1/alert-rules/vendor-rate", json=RATE_RULE)).status_code == 201
    for key in (EDITOR_KEY, SENDER_KEY):
        headers = {"Authorization": f"Bearer {key}"}
        for method, url in [
            ("PUT", "/v1/alert-rules/vendor-rate"),
            ("GET", "/v1/alert-rules/vendor-rate"),
            ("GET", "/v1/alert-rules"),
            ("DELETE", "/v1/alert-rules/vendor-rate"),
        ]:
            answer = await api.request(method, url, headers=headers, json=RATE_RULE if method == "PUT" else None)
            assert (answer.status_code, answer.json()["error"]["code"]) == (403, "forbidden"), (method, url)
    assert (await api.get("/v1/alerts", headers={"Authorization": f"Bearer {EDITOR_KEY}"})).status_code == 200
    assert (await api.get("/v1/alerts", headers={"Authorization": f"Bearer {SENDER_KEY}"})).status_code == 403
    assert (await api.get("/v1/alert-rules/vendor-rate")).json()["enabled"] is True


async def test_an_urgent_delivery_waiting_in_the_queue_fires_and_its_sending_recovers(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, sms_vendor: LoopbackServer
) -> None:
    async with FakeDingTalk() as robot:
        await put_provider(api, "ops-robot", "dingtalk", "dingtalk_robot", robot_config(robot))
        rule = {"kind": "urgent_queue_age", "condition": {"seconds": 120}, "notify": {"provider": "ops-robot"}}
        assert (await api.put("/v1/alert-rules/queue", json=rule)).status_code == 201
        await put_template(
            api, "code", category="verification", priority="urgent", channels={"sms": {"text": "code {data.c}"}}
        )
        await put_user(api, "u1", addresses={"sms": "+8613800138000"})
        sent = await api.post("/v1/messages", json={"template": "code", "to": "u1", "data": {"c": "1"}})
        assert sent.status_code == 202, sent.text
        now = datetime.now(UTC)
        assert (await loop_at(clarion, now + timedelta(seconds=60)).run_once()).notices == []
        fired = await loop_at(clarion, now + timedelta(minutes=5)).run_once()
        assert [n["action"] for n in fired.notices] == ["fire"]
        assert "oldest queued urgent delivery waiting" in robot.robot_posts[0]["markdown"]["text"]

        assert await drain(clarion) == 1
        recovered = await loop_at(clarion, now + timedelta(minutes=6)).run_once()
        assert [(n["action"], n["text"]) for n in recovered.notices] == [
            ("recover", "recovered: no urgent delivery queued")
        ]
        assert len(robot.robot_posts) == 2


async def test_a_department_at_80_percent_of_its_budget_fires_once(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, tmp_path: Any
) -> None:
    """Priced sends bring department growth to 0.09 of a 0.1 CNY budget: the budget rule (80 %) fires once."""
    async with FakeDingTalk() as robot:
        await put_provider(api, "ops-robot", "dingtalk", "dingtalk_robot", robot_config(robot))
        prices = {"currency": "CNY", "default": 0.03}
        config = {"directory": str(tmp_path / "sms"), "prices": prices}
        assert (
            await api.put("/v1/providers/priced", json={"channel": "sms", "kind": "file", "config": config})
        ).status_code == 201
        budget = {"monthly": 0.1, "currency": "CNY", "refuse_marketing": False}
        assert (await api.put("/v1/budgets/growth", json=budget)).status_code == 201
        rule = {"kind": "budget", "condition": {"scope": {"department": "growth"}}, "notify": {"provider": "ops-robot"}}
        assert (await api.put("/v1/alert-rules/spend", json=rule)).status_code == 201
        await put_template(api, "note", department="growth", channels={"sms": {"text": "n {data.n}"}})
        for n in range(3):
            await put_user(api, f"u{n}", addresses={"sms": f"+861380013800{n}"})
        now = datetime.now(UTC)
        await api.post("/v1/messages", json={"template": "note", "to": ["u0", "u1"], "data": {"n": 1}})
        assert await drain(clarion) == 2  # 0.06 of 0.1: under 80 %
        assert (await loop_at(clarion, now + timedelta(minutes=1)).run_once()).notices == []
        await api.post("/v1/messages", json={"template": "note", "to": ["u2"], "data": {"n": 2}})
        assert await drain(clarion) == 1  # 0.09: over
        fired = await loop_at(clarion, now + timedelta(minutes=2)).run_once()
        assert [(n["action"], n["rule_key"], n["subject"]) for n in fired.notices] == [
            ("fire", "spend", "department:growth")
        ]
        assert "growth" in robot.robot_posts[0]["markdown"]["text"]
        assert (await loop_at(clarion, now + timedelta(minutes=3)).run_once()).notices == []  # held, not repeated
