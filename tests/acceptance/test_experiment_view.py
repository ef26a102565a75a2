"""``GET /v1/templates/{key}/experiment``: a template's variants' exposures (sent) and clicks from the funnel
rollups, with the sequential rule's verdict; a template without variants is 409, an unknown one 404."""

from __future__ import annotations

import re

import httpx

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user, sink

USERS = [f"u{n}" for n in range(1, 9)]


async def test_the_experiment_counts_each_variants_sends_and_clicks(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    for n, user in enumerate(USERS, 1):
        await put_user(api, user, addresses={"sms": f"+86138001380{n:02d}"})
    await put_template(
        api,
        "promo",
        channels={"sms": {"text": "A: https://shop.example.com/a"}},
        variants=[
            {"name": "a", "weight": 1},
            {"name": "b", "weight": 1, "channels": {"sms": {"text": "B: https://shop.example.com/b"}}},
        ],
    )
    sent = await api.post("/v1/messages", json={"template": "promo", "to": USERS})
    assert sent.status_code == 202, sent.text
    await drain(clarion)
    lines = sink(clarion, "sms")
    by_variant = {"a": 0, "b": 0}
    clicks = {"a": 0, "b": 0}
    for line in lines:
        variant = "a" if line["content"]["text"].startswith("A:") else "b"
        by_variant[variant] += 1
        if variant == "b":  # every B user clicks, no A user does
            code = re.search(r"/s/([0-9A-Za-z]+)", line["content"]["text"])
            assert code is not None
            assert (await public.get(f"/s/{code.group(1)}")).status_code == 302
            clicks["b"] += 1

    answer = await api.get("/v1/templates/promo/experiment", params={"min_sample": 2})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    arms = {a["name"]: (a["exposures"], a["successes"]) for a in body["arms"]}
    assert arms == {"a": (by_variant["a"], 0), "b": (by_variant["b"], clicks["b"])}
    assert body["rule"]["metric"] == "click_rate"
    # eight users are far too few for the always-valid rule to decide
    assert body["state"] == ("running" if min(by_variant.values()) >= 2 else "collecting")
    assert body["winner"] is None
    assert body["stated"]

    waiting = (await api.get("/v1/templates/promo/experiment", params={"min_sample": 1000})).json()
    assert waiting["state"] == "collecting"


async def test_no_variants_unknown_template_and_a_bad_metric_are_refused(api: httpx.AsyncClient) -> None:
    await put_template(api, "plain", channels={"sms": {"text": "hi"}})
    assert (await api.get("/v1/templates/plain/experiment")).status_code == 409
    assert (await api.get("/v1/templates/ghost/experiment")).status_code == 404
    bad = await api.get("/v1/templates/plain/experiment", params={"metric": "open_rate"})
    assert bad.status_code == 422 and "metric" in bad.text
