"""The funnel, end to end on a known scenario: ``GET /v1/analytics/funnel`` answers the counts at each stage and
the brief's rates from the rollups the timeline keeps, equal to hand counts, per channel and in total; a rebuild
from the timeline gives the same answer; bad filters are a 422 naming the field."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.api.routes import analytics
from clarion.store import rollups
from tests.conftest import drain, put_template, put_user, sink


async def funnel(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    """The answer, which must be what the route documents: the route sends it without validating it again."""
    response = await api.get("/v1/analytics/funnel", params=params)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert analytics.Funnel.model_validate(answer).model_dump(mode="json") == answer
    return answer


async def scenario(api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    """Four users get an order notice on inbox and SMS: u3's phone is suppressed, u4 has none; u1 clicks the SMS
    link and reads the inbox item."""
    for n in (1, 2, 3):
        await put_user(api, f"u{n}", addresses={"sms": f"+861380013800{n}"})
    await put_user(api, "u4")
    answer = await api.post("/v1/suppressions", json={"address": "+8613800138003", "channel": "sms"})
    assert answer.status_code == 201, answer.text
    await put_template(
        api,
        "order",
        department="retail",
        channels={
            "inbox": {"title": "订单已发货", "body": "查看物流"},
            "sms": {"text": "订单已发货 https://shop.example.com/o/{data.n}"},
        },
    )
    sent = await api.post("/v1/messages", json={"template": "order", "to": ["u1", "u2", "u3", "u4"], "data": {"n": 7}})
    assert sent.status_code == 202, sent.text
    await drain(clarion)
    first = next(line for line in sink(clarion, "sms") if line["user_id"] == "u1")
    code = re.search(r"/s/([0-9A-Za-z]+)", first["content"]["text"])
    assert code is not None
    for _ in range(2):  # the second click is counted by the link, not again by the funnel
        assert (await public.get(f"/s/{code.group(1)}")).status_code == 302
    [item] = (await api.get("/v1/users/u1/inbox")).json()["items"]
    assert (await api.post(f"/v1/users/u1/inbox/{item['message_id']}/read")).status_code == 200


HAND = {  # counted by hand from the scenario
    None: {"requested": 4},
    "inbox": {"sent": 4, "delivered": 4, "opened": 1},
    "sms": {"sent": 2, "filtered": 2, "delivered": 1, "clicked": 1},  # u1's click: delivered, with no receipt
}


def stages(cell: dict[str, Any]) -> dict[str, int]:
    return {stage: n for stage, n in cell["stages"].items() if n}


async def test_the_funnel_per_channel_equals_the_hand_counts_and_its_rates(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await scenario(api, public, clarion)
    answer = await funnel(api, group_by="channel", template="order")
    by_channel = {g["key"]["channel"]: g for g in answer["groups"]}
    assert {c: stages(g) for c, g in by_channel.items()} == HAND
    assert by_channel["sms"]["filtered_by"] == {"address": 1, "suppression": 1}
    assert by_channel["inbox"]["rates"]["delivery_rate"] == {"rate": 1.0, "numerator": 4, "denominator": 4}
    assert by_channel["inbox"]["rates"]["open_rate"] == {"rate": 0.25, "numerator": 1, "denominator": 4}
    assert by_channel["sms"]["rates"]["delivery_rate"] == {"rate": 0.5, "numerator": 1, "denominator": 2}
    total = answer["total"]
    assert stages(total) == {"requested": 4, "sent": 6, "delivered": 5, "filtered": 2, "opened": 1, "clicked": 1}
    assert total["rates"]["click_rate"] == {"rate": 0.2, "numerator": 1, "denominator": 5}
    assert total["rates"]["conversion_rate"] == {"rate": 0.0, "numerator": 0, "denominator": 1}
    assert total["revenue"] == 0

    # filters narrow it; another template, department or range has nothing
    assert stages((await funnel(api, channel="sms"))["total"]) == HAND["sms"]
    assert stages((await funnel(api, department="retail"))["total"]) == stages(total)
    assert stages((await funnel(api, template="other"))["total"]) == {}
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert stages((await funnel(api, since=tomorrow.isoformat()))["total"]) == {}
    # by day (the daily rollup) and by hour (the hourly) agree with the total
    [today] = (await funnel(api, group_by="day"))["groups"]
    assert today["key"]["day"] == datetime.now(UTC).date().isoformat()
    assert stages(today) == stages(total)
    hours = (await funnel(api, group_by="hour,channel"))["groups"]
    assert sum(g["stages"]["sent"] for g in hours) == 6


async def test_a_rebuild_from_the_timeline_gives_the_same_funnel(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await scenario(api, public, clarion)
    before = [await funnel(api, group_by=g) for g in ("channel", "hour,provider", "day,template")]

    async def job(conn: Any) -> int:
        return await rollups.rebuild(conn, batch=3)  # small batches: a stage's first event across batches

    counted = await clarion.db.write(job)
    assert counted == sum(sum(v.values()) for v in HAND.values())
    after = [await funnel(api, group_by=g) for g in ("channel", "hour,provider", "day,template")]
    assert after == before


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "weekday"}, "group_by"),
        ({"group_by": "channel,provider,template"}, "group_by"),
        ({"group_by": "day,hour"}, "group_by"),
        ({"since": "2026-12-02T10:00:00+00:00", "until": "2026-12-01T10:00:00+00:00"}, "until"),
        ({"channel": "pigeon"}, "channel"),
        ({"since": "yesterday"}, "since"),
    ],
)
async def test_a_bad_question_is_422_naming_the_field(
    api: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await api.get("/v1/analytics/funnel", params=params)
    assert response.status_code == 422, response.text
    assert field in response.text


async def test_a_push_opened_in_the_app_is_counted_opened_once(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put_user(api, "u1", addresses={"push": ["c3" * 32], "sms": "+8613800138001"})
    await put_template(
        api,
        "shipped",
        channels={"push": {"title": "已发货", "body": "点击查看"}, "sms": {"text": "已发货"}},
    )
    sent = await api.post("/v1/messages", json={"template": "shipped", "to": "u1"})
    assert sent.status_code == 202, sent.text
    await drain(clarion)
    detail = (await api.get(f"/v1/messages/{sent.json()['messages'][0]['id']}")).json()
    by_channel = {d["channel"]: d["id"] for d in detail["deliveries"]}

    first = await api.post(f"/v1/deliveries/{by_channel['push']}/opened")
    assert first.status_code == 200, first.text
    assert first.json() == {"delivery_id": by_channel["push"], "accepted": True}
    again = await api.post(f"/v1/deliveries/{by_channel['push']}/opened")
    assert again.json()["accepted"] is False
    sms = await api.post(f"/v1/deliveries/{by_channel['sms']}/opened")
    assert sms.status_code == 422 and sms.json()["error"]["details"]["field"] == "delivery_id"
    assert (await api.post(f"/v1/deliveries/{'0' * 32}/opened")).status_code == 404

    detail = (await api.get(f"/v1/messages/{sent.json()['messages'][0]['id']}")).json()
    [push] = [d for d in detail["deliveries"] if d["channel"] == "push"]
    assert push["status"] == "read"
    [opened] = [e["reason"] for e in push["timeline"] if e["status"] == "read"]
    assert opened.startswith("opened in the app")
    total = (await funnel(api, channel="push"))["total"]
    assert (total["stages"]["sent"], total["stages"]["opened"]) == (1, 1)


async def test_the_narrow_rollups_answer_as_the_wide_ones_do(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    """Grouped by channel alone the answer comes from the narrow rollups; with the (only) template's filter, from
    the wide ones: the same counts, by day and by hour."""
    await scenario(api, public, clarion)
    for group_by in ("channel", "day", "hour", "provider"):
        narrow = await funnel(api, group_by=group_by)
        wide = await funnel(api, group_by=group_by, template="order")
        assert narrow["groups"] == wide["groups"] and narrow["total"] == wide["total"], group_by
    async with clarion.db.read() as conn:
        for wide_table, narrow_table in rollups.NARROW.items():
            total = sa.select(sa.func.sum(wide_table.c["count"]))
            assert (await conn.execute(total)).scalar() == (
                await conn.execute(sa.select(sa.func.sum(narrow_table.c["count"])))
            ).scalar()
