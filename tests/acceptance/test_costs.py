"""Costs through the HTTP API: an account's prices (per message, per SMS segment, per country calling code) are
applied when a delivery is handed over and kept on it, so a price change leaves history as it was; the month's
cost report by department, channel, provider, template and campaign; department budgets that refuse marketing
once spent (``budget_exceeded`` on the timeline and in the funnel) and ``store.costs.month_use``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from clarion.domain import pricing, sms
from clarion.store import costs
from tests.acceptance.test_campaigns import ANA_KEY, launch, run_all
from tests.conftest import drain, put_template, put_user, set_approval, set_policies

CN, US, UK = "+8613800138001", "+14155550101", "+447911123456"
LONG = "您的订单已发货，" * 20  # 160 characters of UCS-2: three segments
EDITOR_KEY = "clk_editor_for_costs_0000000000000"
PER_SEGMENT = {"currency": "CNY", "unit": "segment", "default": 0.05, "countries": {"86": 0.045, "1": 0.0079}}


@pytest.fixture(autouse=True)
async def _setup(clarion: bootstrap.Clarion) -> None:
    """Marketing may go at any hour the test runs, and templates need no review."""
    await set_policies(clarion, send_windows={})
    await set_approval(clarion, levels={})


async def put_account(api: httpx.AsyncClient, tmp_path: Path, name: str, prices: Any) -> httpx.Response:
    config = {"directory": str(tmp_path / name), "prices": prices}
    return await api.put(f"/v1/providers/{name}", json={"channel": "sms", "kind": "file", "config": config})


async def send(api: httpx.AsyncClient, template: str, *users: str) -> list[str]:
    response = await api.post("/v1/messages", json={"template": template, "to": list(users)})
    assert response.status_code == 202, response.text
    return [m["id"] for m in response.json()["messages"]]


async def report(api: httpx.AsyncClient, group_by: str, **params: Any) -> dict[str, Any]:
    response = await api.get("/v1/analytics/cost", params={"group_by": group_by, **params})
    assert response.status_code == 200, response.text
    return response.json()


def by_key(answer: dict[str, Any]) -> dict[Any, tuple[Any, int, int, float]]:
    return {g["key"]: (g["currency"], g["deliveries"], g["segments"], g["cost"]) for g in answer["groups"]}


async def test_prices_per_segment_and_country_are_applied_at_send(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, tmp_path: Path
) -> None:
    assert sms.count_segments(LONG).count == 3
    created = await put_account(api, tmp_path, "sms-a", PER_SEGMENT)
    assert created.status_code == 201, created.text
    shown = (await api.get("/v1/providers/sms-a")).json()["config"]["prices"]
    assert shown == PER_SEGMENT
    for user, phone in (("cn", CN), ("us", US), ("uk", UK)):
        await put_user(api, user, addresses={"sms": phone})
    for key, text in (("t-cn", "到货"), ("t-us", "arrived"), ("t-uk", "arrived"), ("t-long", LONG)):
        await put_template(api, key, channels={"sms": {"text": text}})
    for key, user in (("t-cn", "cn"), ("t-us", "us"), ("t-uk", "uk"), ("t-long", "cn")):
        await send(api, key, user)
    assert await drain(clarion) == 4

    answer = await report(api, "template")
    assert answer["month"] == datetime.now(UTC).strftime("%Y-%m")
    assert by_key(answer) == {
        "t-cn": ("CNY", 1, 1, 0.045),  # +86: its country's price
        "t-long": ("CNY", 1, 3, 0.135),  # three segments at +86's price
        "t-uk": ("CNY", 1, 1, 0.05),  # +44 is not listed: the default
        "t-us": ("CNY", 1, 1, 0.0079),
    }
    assert answer["total"] == [{"currency": "CNY", "deliveries": 4, "segments": 6, "cost": 0.2379}]


async def test_a_per_message_price_ignores_segments(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, tmp_path: Path
) -> None:
    await put_account(api, tmp_path, "sms-m", {"currency": "USD", "default": "0.0075"})
    await put_user(api, "cn", addresses={"sms": CN})
    await put_template(api, "long", channels={"sms": {"text": LONG}})
    await put_template(api, "short", channels={"sms": {"text": "ok"}})
    await send(api, "long", "cn")
    await send(api, "short", "cn")
    await drain(clarion)
    assert by_key(await report(api, "template")) == {"long": ("USD", 1, 3, 0.0075), "short": ("USD", 1, 1, 0.0075)}


async def test_a_price_change_applies_from_then_on_and_history_is_unchanged(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, tmp_path: Path
) -> None:
    await put_account(api, tmp_path, "sms-a", {"currency": "CNY", "default": 0.05})
    await put_user(api, "cn", addresses={"sms": CN})
    await put_template(api, "before", channels={"sms": {"text": "one"}})
    await put_template(api, "after", channels={"sms": {"text": "two"}})
    [before] = await send(api, "before", "cn")
    await drain(clarion)

    changed = await put_account(api, tmp_path, "sms-a", {"currency": "CNY", "default": 0.07})
    assert changed.status_code == 200, changed.text
    await send(api, "after", "cn")
    await drain(clarion)
    assert by_key(await report(api, "template")) == {"after": ("CNY", 1, 1, 0.07), "before": ("CNY", 1, 1, 0.05)}
    [delivery] = (await api.get(f"/v1/messages/{before}")).json()["deliveries"]  # each delivery shows its cost
    assert (delivery["cost"], delivery["cost_currency"]) == (0.05, "CNY")
    [entry] = (await api.get("/v1/audit", params={"action": "provider.update"})).json()["entries"]
    assert entry["detail"]["changed"] == ["config.prices"]


async def test_the_report_groups_by_department_channel_provider_template_and_campaign(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, tmp_path: Path
) -> None:
    await clarion.keys.create("ana", ("approver",), key=ANA_KEY)
    await put_account(api, tmp_path, "sms-a", {"currency": "CNY", "default": 0.04})
    for n in (1, 2, 3):
        await put_user(api, f"u{n}", addresses={"sms": f"+861380013800{n}"})
    await put_template(
        api, "order", department="retail", channels={"sms": {"text": "shipped"}, "inbox": {"title": "t", "body": "b"}}
    )
    await put_template(api, "promo", category="marketing", department="growth", channels={"sms": {"text": "sale"}})
    await send(api, "order", "u1", "u2")  # two SMS and two inbox items
    listed = await api.post(
        "/v1/lists", params={"key": "vip"}, content="u1\nu3\n", headers={"Content-Type": "text/plain"}
    )
    assert listed.status_code in (200, 201), listed.text
    put = await api.put("/v1/campaigns/spring", json={"template": "promo", "audience": {"list": "vip"}})
    assert put.status_code in (200, 201), put.text
    await launch(api, "spring")
    assert await run_all(clarion.campaigns) == 2
    assert await drain(clarion) == 6

    inbox = (None, 2, 0, 0.0)  # the built-in inbox has no prices: counted, not priced
    departments = (await report(api, "department"))["groups"]
    assert [(g["key"], g["currency"], g["deliveries"]) for g in departments] == [
        ("growth", "CNY", 2),
        ("retail", None, 2),
        ("retail", "CNY", 2),
    ]
    channels = (await report(api, "channel"))["groups"]
    assert [(g["key"], g["currency"], g["deliveries"], g["segments"], g["cost"]) for g in channels] == [
        ("inbox", *inbox),
        ("sms", "CNY", 4, 4, 0.16),
    ]
    providers = (await report(api, "provider"))["groups"]
    assert [(g["key"], g["currency"], g["cost"]) for g in providers] == [("inbox", None, 0.0), ("sms-a", "CNY", 0.16)]
    campaigns = (await report(api, "campaign"))["groups"]
    assert [(g["key"], g["currency"], g["deliveries"], g["cost"]) for g in campaigns] == [
        ("spring", "CNY", 2, 0.08),
        (None, None, 2, 0.0),
        (None, "CNY", 2, 0.08),
    ]
    templates = {(g["key"], g["currency"]): g["cost"] for g in (await report(api, "template"))["groups"]}
    assert templates == {("order", None): 0.0, ("order", "CNY"): 0.08, ("promo", "CNY"): 0.08}
    total = (await report(api, "template"))["total"]
    assert total == [
        {"currency": None, "deliveries": 2, "segments": 0, "cost": 0.0},
        {"currency": "CNY", "deliveries": 4, "segments": 4, "cost": 0.16},
    ]
    # another month has nothing
    assert (await report(api, "department", month="2001-01"))["groups"] == []


async def test_a_department_over_its_budget_has_its_marketing_refused(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, tmp_path: Path
) -> None:
    await put_account(api, tmp_path, "sms-a", {"currency": "CNY", "default": 0.05})
    for n in (1, 2, 3):
        await put_user(api, f"u{n}", addresses={"sms": f"+861380013800{n}"})
    await put_template(api, "promo", category="marketing", department="growth", channels={"sms": {"text": "sale"}})
    await put_template(api, "notice", department="growth", channels={"sms": {"text": "order"}})
    await put_template(
        api, "other", category="marketing", department="retail", channels={"sms": {"text": "retail sale"}}
    )
    await send(api, "promo", "u1", "u2")
    assert await drain(clarion) == 2  # spent 0.10 of growth's month

    put = await api.put("/v1/budgets/growth", json={"monthly": 0.1, "currency": "CNY", "refuse_marketing": True})
    assert put.status_code == 201, put.text
    month = datetime.now(UTC).strftime("%Y-%m")
    assert put.json() | {"created_at": None, "updated_at": None} == {
        "department": "growth",
        "monthly": 0.1,
        "currency": "CNY",
        "refuse_marketing": True,
        "month": month,
        "spent": 0.1,
        "created_at": None,
        "updated_at": None,
    }
    await api.put("/v1/budgets/retail", json={"monthly": 100, "currency": "CNY", "refuse_marketing": True})

    [refused] = await send(api, "promo", "u3")
    [notice] = await send(api, "notice", "u3")  # not marketing: never refused
    [other] = await send(api, "other", "u3")  # another department, within its budget
    await drain(clarion)
    [delivery] = (await api.get(f"/v1/messages/{refused}")).json()["deliveries"]
    assert delivery["status"] == "filtered"
    event = delivery["timeline"][-1]
    assert event["reason"] == f"budget_exceeded: department growth spent 0.1 of 0.1 CNY in {month}"
    assert event["detail"] == {
        "policy": "budget",
        "department": "growth",
        "month": month,
        "currency": "CNY",
        "spent": 0.1,
        "budget": 0.1,
    }
    for sent in (notice, other):
        assert (await api.get(f"/v1/messages/{sent}")).json()["status"] == "sent"
    funnel = (await api.get("/v1/analytics/funnel", params={"template": "promo"})).json()
    assert funnel["total"]["filtered_by"] == {"budget": 1}

    async with clarion.db.read() as conn:
        use = await costs.month_use(conn, pricing.month_of(datetime.now(UTC)))
    assert use == {"growth": (0.15, 0.1), "retail": (0.05, 100.0)}  # the notice's cost counts too
    listed = (await api.get("/v1/budgets")).json()["budgets"]
    assert [(b["department"], b["spent"], b["monthly"]) for b in listed] == [
        ("growth", 0.15, 0.1),
        ("retail", 0.05, 100),
    ]

    # without the budget, growth's marketing goes again
    assert (await api.delete("/v1/budgets/growth")).status_code == 204
    assert (await api.delete("/v1/budgets/growth")).status_code == 404
    [again] = await send(api, "promo", "u3")
    await drain(clarion)
    shown = (await api.get(f"/v1/messages/{again}")).json()
    assert shown["status"] == "sent", shown
    actions = [e["action"] for e in (await api.get("/v1/audit", params={"subject": "budget:growth"})).json()["entries"]]
    assert actions == ["budget.delete", "budget.create"]


async def test_budgets_need_admin(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await clarion.keys.create("ed", ("editor",), key=EDITOR_KEY)
    editor = {"Authorization": f"Bearer {EDITOR_KEY}"}
    body = {"monthly": 1, "currency": "CNY"}
    assert (await api.put("/v1/budgets/growth", json=body, headers=editor)).status_code == 403
    assert (await api.put("/v1/budgets/growth", json=body)).status_code == 201
    assert (await api.delete("/v1/budgets/growth", headers=editor)).status_code == 403
    assert (await api.get("/v1/budgets", headers=editor)).status_code == 200


@pytest.mark.parametrize(
    ("prices", "field"),
    [
        ({"currency": "cny", "default": 0.05}, "config.prices.currency"),
        ({"currency": "CNY", "unit": "page", "default": 0.05}, "config.prices.unit"),
        ({"currency": "CNY", "default": -1}, "config.prices.default"),
        ({"currency": "CNY", "default": 0.0000001}, "config.prices.default"),
        ({"currency": "CNY", "default": "cheap"}, "config.prices.default"),
        ({"currency": "CNY"}, "config.prices.default"),
        ({"currency": "CNY", "countries": {"999": 0.1}}, "config.prices.countries.999"),
        ({"currency": "CNY", "default": 1, "tax": 0.06}, "config.prices.tax"),
        ("0.05", "config.prices"),
    ],
)
async def test_bad_prices_are_422_naming_the_field(
    api: httpx.AsyncClient, tmp_path: Path, prices: Any, field: str
) -> None:
    response = await put_account(api, tmp_path, "sms-a", prices)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == field
    assert (await api.get("/v1/providers/sms-a")).status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/budgets/growth", {"monthly": -1, "currency": "CNY"}, "monthly"),
        ("/v1/budgets/growth", {"monthly": 0.0000001, "currency": "CNY"}, "monthly"),
        ("/v1/budgets/growth", {"monthly": 1, "currency": "yuan"}, "currency"),
        ("/v1/budgets/growth", {"currency": "CNY"}, "monthly"),
        ("/v1/budgets/growth", {"monthly": 1, "currency": "CNY", "refuse": True}, "refuse"),
    ],
)
async def test_bad_budgets_are_422_naming_the_field(
    api: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    response = await api.put(path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == field


@pytest.mark.parametrize(
    ("params", "field"),
    [({"group_by": "user"}, "group_by"), ({"month": "2026-13"}, "month"), ({"month": "December"}, "month")],
)
async def test_bad_report_queries_are_422_naming_the_field(
    api: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await api.get("/v1/analytics/cost", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] in (field, f"query.{field}")
