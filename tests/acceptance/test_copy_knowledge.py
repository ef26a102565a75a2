"""``GET /v1/analytics/copy``: each copy (template version × variant × channel) with its sends, clicks and
conversions from the funnel rollups, rates with Wilson intervals, ranked by their lower bound; a copy with few
sends is listed but not ranked; the Chinese and English terms of the top copies are found; bad parameters are
a 422 naming the field.

The ranking scenario needs thousands of sends: its counts are written into the daily rollup with
``store.rollups.add``, as the timeline writes them; the small-sample test sends, clicks and reads real messages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from clarion.store import rollups
from clarion.store import tables as t
from tests.conftest import drain, put_template, put_user, set_approval, sink


@pytest.fixture(autouse=True)
async def _no_review(clarion: bootstrap.Clarion) -> None:
    await set_approval(clarion, levels={})


async def knowledge(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await api.get("/v1/analytics/copy", params=params)
    assert response.status_code == 200, response.text
    return response.json()


# (template, variant, channel) → sent, clicked, converted; split over two days and two providers below
SENDS = {
    ("flash", "a", "sms"): (1000, 120, 30),
    ("flash", "b", "sms"): (1000, 50, 10),
    ("deal", "", "sms"): (2000, 200, 40),
    ("weekly", "", "sms"): (1500, 60, 15),
    ("weekly", "", "push"): (800, 24, 8),
    ("tips", "", "sms"): (500, 10, 2),
    ("lucky", "", "sms"): (12, 6, 1),
}


async def seed(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    marketing = {"category": "marketing"}
    await put_template(
        api,
        "flash",
        channels={"sms": {"text": "【Shop】{name}，限时秒杀，全场五折，free shipping today"}},
        variants=[
            {"name": "a", "weight": 1},
            {"name": "b", "weight": 1, "channels": {"sms": {"text": "【Shop】新品上架，欢迎选购 new arrivals"}}},
        ],
        **marketing,
    )
    await put_template(api, "deal", channels={"sms": {"text": "限时秒杀：free shipping on all orders"}}, **marketing)
    await put_template(
        api,
        "weekly",
        channels={"sms": {"text": "本周精选 weekly picks"}, "push": {"title": "会员日", "body": "member day picks"}},
        **marketing,
    )
    await put_template(api, "tips", channels={"sms": {"text": "订单已发货 track your order"}}, **marketing)
    await put_template(api, "lucky", channels={"sms": {"text": "限时 lucky draw"}}, **marketing)
    days = [datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)]
    cells: dict[tuple[Any, ...], list[float]] = {}
    for (key, variant, channel), counts in SENDS.items():
        for stage, n in zip(("sent", "clicked", "converted"), counts, strict=True):
            first = n // 2
            for day, provider, part in ((days[0], "vendor-a", first), (days[1], "vendor-b", n - first)):
                dims = (day, key, 1, variant, "", "", "marketing", "", channel, provider, stage, "")
                cells[dims] = [part, 0.0]

    async def job(conn: Any) -> None:
        await rollups.add(conn, t.funnel_daily, cells)

    await clarion.db.write(job)


def by_copy(rows: list[dict[str, Any]]) -> dict[tuple[str, str | None, str], dict[str, Any]]:
    return {(r["template"], r["variant"], r["channel"]): r for r in rows}


async def test_copies_are_ranked_by_the_lower_bound_of_their_rates_with_their_terms(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await seed(api, clarion)
    answer = await knowledge(api)
    assert answer["rank_by"] == "click" and answer["min_sends"] == 100
    order = [(r["template"], r["variant"], r["channel"]) for r in answer["ranked"]]
    # flash/a's 12 % on 1,000 sends beats deal's 10 % on 2,000; the rest follow their rates
    assert order == [
        ("flash", "a", "sms"),
        ("deal", None, "sms"),
        ("flash", "b", "sms"),
        ("weekly", None, "sms"),
        ("weekly", None, "push"),
        ("tips", None, "sms"),
    ]
    rows = by_copy(answer["ranked"])
    best = rows["flash", "a", "sms"]
    assert (best["sent"], best["clicked"], best["converted"], best["version"]) == (1000, 120, 30, 1)
    assert best["click_rate"] == pytest.approx({"rate": 0.12, "low": 0.1013, "high": 0.1416}, abs=1e-4)
    assert best["conversion_rate"] == pytest.approx({"rate": 0.03, "low": 0.0211, "high": 0.0425}, abs=1e-4)
    assert (best["click_rank"], best["conversion_rank"], best["top"]) == (1, 1, True)
    assert best["text"] == "【Shop】{name}，限时秒杀，全场五折，free shipping today"
    assert rows["flash", "b", "sms"]["text"] == "【Shop】新品上架，欢迎选购 new arrivals"  # the variant's own copy
    assert rows["weekly", None, "push"]["text"] == "会员日\nmember day picks"
    deal = rows["deal", None, "sms"]
    assert deal["click_rate"]["rate"] == 0.1 and deal["conversion_rank"] == 2 and deal["top"]
    assert not any(r["top"] for k, r in rows.items() if k[0] not in ("flash", "deal") or k[1] == "b")

    # 6 clicks out of 12 is 50 %, but 12 sends rank nothing
    [lucky] = answer["not_enough_data"]
    assert (lucky["template"], lucky["sent"], lucky["clicked"]) == ("lucky", 12, 6)
    assert lucky["click_rate"] == pytest.approx({"rate": 0.5, "low": 0.2538, "high": 0.7462}, abs=1e-4)
    assert lucky["click_rank"] is None and lucky["conversion_rank"] is None and not lucky["top"]

    terms = {x["term"]: x for x in answer["terms"]}
    assert {"限时", "秒杀", "free shipping", "free", "shipping"} <= set(terms)
    assert (terms["秒杀"]["top_count"], terms["秒杀"]["rest_count"]) == (2, 0)
    assert all(x["score"] > 0 for x in answer["terms"])
    assert "picks" not in terms and "{name}" not in terms and "name" not in terms

    # filters: a channel, a template; ranking by conversions
    push = await knowledge(api, channel="push", min_sends=10)
    assert [(r["template"], r["channel"]) for r in push["ranked"]] == [("weekly", "push")] and push["terms"] == []
    assert [r["variant"] for r in (await knowledge(api, template="flash"))["ranked"]] == ["a", "b"]
    assert (await knowledge(api, category="verification"))["ranked"] == []
    by_conversion = await knowledge(api, rank_by="conversion")
    assert [r["template"] for r in by_conversion["ranked"]][:2] == ["flash", "deal"]
    assert [r["conversion_rank"] for r in by_conversion["ranked"]] == [1, 2, 3, 4, 5, 6]
    # at min_sends=10, lucky's 1 in 12 is ranked: its lower bound (1.5 %) just beats deal's 40 in 2,000 (1.47 %)
    low_bar = await knowledge(api, rank_by="conversion", min_sends=10)
    assert [r["template"] for r in low_bar["ranked"]][:3] == ["flash", "lucky", "deal"]


async def test_a_small_real_sample_is_listed_but_not_ranked(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    users = [f"u{n}" for n in range(12)]
    for n, user in enumerate(users):
        await put_user(api, user, addresses={"sms": f"+86138001380{n:02d}"})
    await put_template(api, "hello", channels={"sms": {"text": "限时优惠 https://shop.example.com/h"}})
    assert (await api.post("/v1/messages", json={"template": "hello", "to": users})).status_code == 202
    await drain(clarion)
    for line in sink(clarion, "sms")[:3]:
        code = re.search(r"/s/([0-9A-Za-z]+)", line["content"]["text"])
        assert code is not None
        assert (await public.get(f"/s/{code.group(1)}")).status_code == 302

    answer = await knowledge(api)
    assert answer["ranked"] == [] and answer["terms"] == []
    [row] = answer["not_enough_data"]
    assert (row["template"], row["variant"], row["channel"]) == ("hello", None, "sms")
    assert (row["sent"], row["clicked"], row["converted"]) == (12, 3, 0)
    assert row["click_rate"]["rate"] == 0.25 and row["click_rank"] is None
    assert row["text"] == "限时优惠 https://shop.example.com/h"
    assert [r["clicked"] for r in (await knowledge(api, min_sends=12))["ranked"]] == [3]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"rank_by": "opens"}, "rank_by"),
        ({"min_sends": 0}, "min_sends"),
        ({"channel": "pigeon"}, "channel"),
        ({"category": "spam"}, "category"),
    ],
)
async def test_bad_parameters_are_refused_naming_the_field(
    api: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    response = await api.get("/v1/analytics/copy", params=params)
    assert response.status_code == 422, response.text
    assert field in str(response.json()["error"]["details"])
