"""A campaign's A/B test (``"ab": {"test_share", "decide_after_hours"}``): the runner sends a random test cohort
with the template's variants, waits for the sequential rule, and sends everyone else the winner — or at the
deadline the best variant so far, stated as such. The decision is on the run and in the audit log."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from tests.acceptance.test_campaigns import ANA_KEY, campaign, launch, run_all
from tests.acceptance.test_experiment_winner import click_every_b
from tests.conftest import drain, put_template, put_user, set_approval, set_policies, sink

AUDIENCE = [f"u{i}" for i in range(150)]


@pytest.fixture(autouse=True)
async def _setup(clarion: bootstrap.Clarion, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    await set_policies(clarion, send_windows={})
    await set_approval(clarion, levels={})
    await clarion.keys.create("ana", ("approver",), key=ANA_KEY)
    for i, user in enumerate(AUDIENCE):
        await put_user(api, user, addresses={"sms": f"+86138{i:08d}"})
    await put_template(
        api,
        "promo",
        category="marketing",
        channels={"sms": {"text": "A: https://shop.example.com/a"}},
        variants=[
            {"name": "a", "weight": 1},
            {"name": "b", "weight": 1, "channels": {"sms": {"text": "B: https://shop.example.com/b"}}},
        ],
    )

    async def everyone(spec: Any) -> list[str]:
        return list(AUDIENCE)

    monkeypatch.setattr(clarion.segments, "audience", everyone)
    clarion.campaigns.batch_size = 20


def received(clarion: bootstrap.Clarion) -> dict[str, str]:
    """Each user's variant, from what the SMS sink got."""
    return {line["user_id"]: line["content"]["text"][0].lower() for line in sink(clarion, "sms")}


async def the_cohort(api: httpx.AsyncClient, clarion: bootstrap.Clarion, **ab: Any) -> dict[str, str]:
    """Launch the campaign and let the runner go as far as it will: the test cohort, then it waits."""
    await campaign(api, "spring", ab={"test_share": 0.3, "decide_after_hours": 4, **ab})
    await launch(api, "spring")
    assert await run_all(clarion.campaigns) == 45  # 30 % of 150
    assert await run_all(clarion.campaigns) == 0  # no decision yet: nobody else is sent anything
    await drain(clarion)
    cohort = received(clarion)
    assert len(cohort) == 45 and set(cohort.values()) == {"a", "b"}
    run = (await api.get("/v1/campaigns/spring")).json()["run"]
    assert (run["status"], run["processed"], run["ab"]["state"]) == ("running", 45, "deciding")
    return cohort


async def test_the_rest_gets_the_winner_once_the_rule_decides(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    cohort = await the_cohort(api, clarion, min_sample=10)
    assert sorted(cohort) != AUDIENCE[:45]  # a random cohort, not the head of the audience
    await click_every_b(public, clarion)
    clarion.campaigns.ab_look_seconds = 0

    assert await run_all(clarion.campaigns) == 105
    await drain(clarion)
    everyone = received(clarion)
    assert sorted(everyone) == sorted(AUDIENCE)
    assert {everyone[u] for u in AUDIENCE if u not in cohort} == {"b"}
    shown = (await api.get("/v1/campaigns/spring")).json()
    assert shown["ab"]["test_share"] == 0.3 and shown["run"]["status"] == "completed"
    decided = shown["run"]["ab"]
    assert (decided["state"], decided["winner"], decided["by"]) == ("decided", "b", "rule")
    assert decided["stated"].startswith("b wins")
    (entry,) = (await api.get("/v1/audit", params={"action": "campaign.ab_decided"})).json()["entries"]
    assert (entry["actor"], entry["subject"], entry["detail"]["winner"]) == (
        "clarion:campaigns",
        "campaign:spring",
        "b",
    )


async def test_at_the_deadline_the_rest_gets_the_best_so_far_stated_as_such(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    cohort = await the_cohort(api, clarion, min_sample=1000)  # the rule cannot decide on 45 users
    clicks = await click_every_b(public, clarion)
    assert clicks > 0
    clarion.campaigns.ab_look_seconds = 0
    assert await run_all(clarion.campaigns) == 0  # looked, no winner, deadline not reached

    later = datetime.now(UTC) + timedelta(hours=4, minutes=1)
    clarion.campaigns.clock = lambda: later
    assert await run_all(clarion.campaigns) == 105
    await drain(clarion)
    everyone = received(clarion)
    assert {everyone[u] for u in AUDIENCE if u not in cohort} == {"b"}
    decided = (await api.get("/v1/campaigns/spring")).json()["run"]["ab"]
    assert (decided["winner"], decided["by"]) == ("b", "deadline")
    assert decided["stated"].startswith("No winner at the deadline")
    assert {a["name"]: a["successes"] for a in decided["arms"]} == {"a": 0, "b": clicks}


async def test_a_template_without_variants_fails_the_run_saying_why(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put_template(api, "plain", category="marketing", channels={"sms": {"text": "hi"}})
    await campaign(api, "spring", template="plain", ab={"test_share": 0.1, "decide_after_hours": 1})
    await launch(api, "spring")
    await run_all(clarion.campaigns)
    run = (await api.get("/v1/campaigns/spring")).json()["run"]
    assert run["status"] == "failed" and "two variants" in run["error"]["message"]
    assert sink(clarion, "sms") == []


@pytest.mark.parametrize(
    ("ab", "field"),
    [
        ({"test_share": 0.9, "decide_after_hours": 4}, "ab.test_share"),
        ({"test_share": 0, "decide_after_hours": 4}, "ab.test_share"),
        ({"test_share": 0.1}, "ab.decide_after_hours"),
        ({"test_share": 0.1, "decide_after_hours": 4, "metric": "open_rate"}, "ab.metric"),
        ({"test_share": 0.1, "decide_after_hours": 4, "winner": "a"}, "ab.winner"),
        ("half", "ab"),
    ],
)
async def test_a_bad_ab_is_refused_naming_the_field(api: httpx.AsyncClient, ab: Any, field: str) -> None:
    answer = await api.put("/v1/campaigns/spring", json={"template": "promo", "audience": {"segment": "x"}, "ab": ab})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["details"]["field"] == field


async def test_a_campaigns_goal_converts_its_clicked_messages(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    """The template has no goal; the campaign's ``goal`` names the event that converts its messages after a click."""
    await campaign(api, "spring", goal="order.paid")
    await launch(api, "spring")
    assert await run_all(clarion.campaigns) == len(AUDIENCE)
    await drain(clarion)
    line = sink(clarion, "sms")[0]
    code = re.search(r"/s/([0-9A-Za-z]+)", line["content"]["text"])
    assert code is not None
    assert (await public.get(f"/s/{code.group(1)}")).status_code == 302
    clicked, other = line["user_id"], next(u for u in AUDIENCE if u != line["user_id"])
    events = [{"user_id": u, "event": "order.paid", "properties": {"amount": 99}} for u in (clicked, other)]
    tracked = await api.post("/v1/track", json={"events": events})
    assert tracked.status_code == 200 and tracked.json()["converted"] == 1, tracked.text  # no click: no conversion
    funnel = (await api.get("/v1/analytics/funnel", params={"campaign": "spring"})).json()["total"]
    assert (funnel["stages"]["converted"], funnel["revenue"]) == (1, 99)
    detail = (await api.get(f"/v1/messages/{line['message_id']}")).json()
    (converted,) = [e for d in detail["deliveries"] for e in d["timeline"] if e["status"] == "converted"]
    assert converted["detail"]["campaign"] == "spring"
