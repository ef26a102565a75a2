"""A template's experiment decides by itself: once the sequential rule names a winner, the experiment loop gives it
100 % of the traffic in a new, audited, weights-only version (no new review), and ``experiment:revert`` puts the
old weights back with ``auto_apply`` off. Sends after each step show who gets what."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from clarion.pipeline import experiments
from tests.conftest import drain, put_template, put_user, set_policies, sink

EDITOR = {"Authorization": "Bearer clk_ed_the_experiment_editor_000"}
SENDER = {"Authorization": "Bearer clk_sam_the_experiment_sender_0"}
ANA = {"Authorization": "Bearer clk_ana_the_experiment_approver_0"}
BO = {"Authorization": "Bearer clk_bo_the_experiment_approver_00"}
EXPERIMENT = {"metric": "click_rate", "min_sample": 10, "alpha": 0.05}
NO_DEDUP = {"dedup_seconds": 0}  # the same users are sent the same words again, on purpose


@pytest.fixture
async def people(clarion: bootstrap.Clarion) -> None:
    for name, roles, headers in (
        ("ed", ("editor",), EDITOR),
        ("sam", ("sender",), SENDER),
        ("ana", ("approver",), ANA),
        ("bo", ("approver",), BO),
    ):
        await clarion.keys.create(name, roles, key=headers["Authorization"].removeprefix("Bearer "))


def variants(a: int = 1, b: int = 1) -> list[dict[str, Any]]:
    return [
        {"name": "a", "weight": a},
        {"name": "b", "weight": b, "channels": {"sms": {"text": "B: https://shop.example.com/b"}}},
    ]


async def put_promo(api: httpx.AsyncClient, **experiment: Any) -> None:
    """The notification ``promo`` with variants a and b (b's link differs) and the test's experiment."""
    await put_template(
        api,
        "promo",
        category="notification",
        channels={"sms": {"text": "A: https://shop.example.com/a"}},
        variants=variants(),
        experiment={**EXPERIMENT, **experiment},
        policy=NO_DEDUP,
    )


async def users(api: httpx.AsyncClient, prefix: str, n: int) -> list[str]:
    ids = [f"{prefix}{i}" for i in range(n)]
    for i, user in enumerate(ids):
        await put_user(api, user, addresses={"sms": f"+8613{hash(prefix) % 1000:03d}{i:06d}"})
    return ids


async def send(api: httpx.AsyncClient, clarion: bootstrap.Clarion, to: list[str]) -> dict[str, str]:
    """Send ``promo`` to ``to`` and deliver it; each user's variant, read from what the SMS sink received."""
    before = len(sink(clarion, "sms"))
    answer = await api.post("/v1/messages", json={"template": "promo", "to": to})
    assert answer.status_code == 202, answer.text
    await drain(clarion)
    got = {}
    for line in sink(clarion, "sms")[before:]:
        got[line["user_id"]] = "b" if line["content"]["text"].startswith("B:") else "a"
    assert sorted(got) == sorted(to)
    return got


async def click_every_b(public: httpx.AsyncClient, clarion: bootstrap.Clarion) -> int:
    clicks = 0
    for line in sink(clarion, "sms"):
        if line["content"]["text"].startswith("B:"):
            code = re.search(r"/s/([0-9A-Za-z]+)", line["content"]["text"])
            assert code is not None
            assert (await public.get(f"/s/{code.group(1)}")).status_code == 302
            clicks += 1
    return clicks


async def b_wins(api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion) -> dict[str, str]:
    """Sixty users split between a and b; every b user clicks, no a user does: a clear winner."""
    first = await send(api, clarion, await users(api, "u", 60))
    assert 15 < sum(v == "b" for v in first.values()) < 45
    assert await click_every_b(public, clarion) == sum(v == "b" for v in first.values())
    return first


async def test_the_winner_takes_all_traffic_audited_and_a_revert_restores_the_split(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None
) -> None:
    await put_promo(api)
    first = await b_wins(api, public, clarion)
    view = (await api.get("/v1/templates/promo/experiment")).json()
    assert (view["state"], view["winner"], view["applied"], view["auto_apply"]) == ("winner", "b", None, True)

    (applied,) = await experiments.apply_winners(clarion.db)
    assert (applied.template, applied.winner, applied.version) == ("promo", "b", 2)
    clarion.invalidate()
    template = (await api.get("/v1/templates/promo")).json()
    assert (template["version"], template["live_version"], template["status"]) == (2, 2, "approved")
    assert {v["name"]: v["weight"] for v in template["variants"]} == {"a": 0, "b": 100}
    view = (await api.get("/v1/templates/promo/experiment")).json()
    assert view["applied"]["winner"] == "b" and view["applied"]["version"] == 2
    assert view["applied"]["stated"].startswith("b wins")
    (entry,) = (await api.get("/v1/audit", params={"action": "experiment.winner"})).json()["entries"]
    assert (entry["actor"], entry["subject"]) == ("clarion:experiment", "template:promo@2")
    assert entry["detail"]["weights_before"] == {"a": 1, "b": 1}

    # everyone gets the winner now, the users who had a before included; a second pass changes nothing
    assert set((await send(api, clarion, list(first))).values()) == {"b"}
    assert await experiments.apply_winners(clarion.db) == []

    assert (await api.post("/v1/templates/promo/experiment:revert", headers=SENDER)).status_code == 403
    reverted = await api.post("/v1/templates/promo/experiment:revert", headers=EDITOR)
    assert reverted.status_code == 200, reverted.text
    assert reverted.json() == {"template": "promo", "version": 3, "weights": {"a": 1, "b": 1}}
    template = (await api.get("/v1/templates/promo")).json()
    assert {v["name"]: v["weight"] for v in template["variants"]} == {"a": 1, "b": 1}
    assert template["experiment"]["auto_apply"] is False
    (undo,) = (await api.get("/v1/audit", params={"action": "experiment.revert"})).json()["entries"]
    assert (undo["actor"], undo["subject"], undo["detail"]["winner"]) == ("ed", "template:promo@3", "b")
    assert (await api.get("/v1/templates/promo/experiment")).json()["applied"] is None

    # every user is back on the variant they had, and the loop leaves the template alone with auto_apply off
    assert await send(api, clarion, list(first)) == first
    assert await experiments.apply_winners(clarion.db) == []
    again = await api.post("/v1/templates/promo/experiment:revert", headers=EDITOR)
    assert again.status_code == 409 and again.json()["error"]["details"]["field"] == "experiment"


async def test_a_winner_on_reviewed_marketing_goes_live_without_a_new_review(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None
) -> None:
    await set_policies(clarion, send_windows={})  # marketing at any hour the test runs
    body = {
        "name": "promo",
        "category": "marketing",
        "channels": {"sms": {"text": "A: https://shop.example.com/a"}},
        "variants": variants(),
        "experiment": EXPERIMENT,
        "policy": NO_DEDUP,
    }
    assert (await api.put("/v1/templates/promo", json=body, headers=EDITOR)).status_code == 201
    for headers, action in ((EDITOR, "submit"), (ANA, "approve"), (BO, "approve")):
        assert (await api.post(f"/v1/templates/promo/versions/1/{action}", headers=headers)).status_code == 200
    await b_wins(api, public, clarion)
    (applied,) = await experiments.apply_winners(clarion.db)
    assert applied.version == 2
    version = (await api.get("/v1/templates/promo/versions/2")).json()
    assert version["status"] == "approved" and version["approvals"][0]["level"] == "weights"
    assert (await api.get("/v1/templates/promo")).json()["live_version"] == 2


async def test_no_winner_is_applied_while_undecided_off_or_under_review(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None
) -> None:
    await put_promo(api, min_sample=1000)
    await b_wins(api, public, clarion)
    assert (await api.get("/v1/templates/promo/experiment")).json()["state"] == "collecting"
    assert await experiments.apply_winners(clarion.db) == []  # the rule has not decided

    await put_promo(api, auto_apply=False)
    assert (await api.get("/v1/templates/promo/experiment")).json()["state"] == "winner"
    assert await experiments.apply_winners(clarion.db) == []  # decided, but not to be applied by itself
    assert (await api.post("/v1/templates/promo/experiment:revert", headers=EDITOR)).status_code == 409


async def test_an_experiment_needs_variants_and_a_valid_rule(api: httpx.AsyncClient) -> None:
    base = {"name": "x", "category": "notification", "channels": {"sms": {"text": "hi"}}}
    lone = await api.put("/v1/templates/x", json={**base, "experiment": EXPERIMENT})
    assert lone.status_code == 422 and "experiment" in lone.text
    for bad in ({"metric": "open_rate"}, {"min_sample": 0}, {"alpha": 0.9}, {"winner": "a"}):
        answer = await api.put("/v1/templates/x", json={**base, "variants": variants(), "experiment": bad})
        assert answer.status_code == 422, (bad, answer.text)
        assert "experiment" in answer.text


async def test_the_experiment_loop_applies_a_winner_by_itself(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion, people: None
) -> None:
    await put_promo(api)
    await b_wins(api, public, clarion)
    stop = asyncio.Event()
    told: list[bool] = []
    loop = asyncio.create_task(experiments.run(clarion.db, lambda: told.append(True), stop, interval=0.05))
    try:
        for _ in range(100):
            if told:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await loop
    assert told == [True]  # told once: the second pass found nothing more to apply
    template = (await api.get("/v1/templates/promo")).json()
    assert {v["name"]: v["weight"] for v in template["variants"]} == {"a": 0, "b": 100}
