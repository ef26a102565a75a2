"""Channel fallback chains through the template API: saved, shown and checked (a cycle is refused)."""

from __future__ import annotations

from typing import Any

CHANNELS = {
    "push": {"title": "Order", "body": "Shipped"},
    "sms": {"text": "Shipped"},
    "inbox": {"title": "Order", "body": "Shipped"},
}


def template(fallback: Any) -> dict[str, Any]:
    return {"name": "T", "category": "transactional", "channels": CHANNELS, "fallback": fallback}


async def test_a_fallback_chain_is_saved_and_shown(api) -> None:
    chain = [{"from": "push", "to": "sms", "when": "not_delivered", "within": 120}]
    saved = await api.put("/v1/templates/shipped", json=template(chain))
    assert saved.status_code == 201, saved.text
    assert saved.json()["fallback"] == chain
    assert (await api.get("/v1/templates/shipped")).json()["fallback"] == chain
    plain = await api.put("/v1/templates/plain", json={**template(None)})
    assert plain.json()["fallback"] is None


async def test_a_cycle_is_refused_when_the_template_is_saved(api) -> None:
    cycle = [{"from": "push", "to": "sms", "when": "failed"}, {"from": "sms", "to": "push", "when": "failed"}]
    refused = await api.put("/v1/templates/loop", json=template(cycle))
    assert refused.status_code == 422, refused.text
    assert "cycle" in refused.text and "fallback" in refused.text
    assert (await api.get("/v1/templates/loop")).status_code == 404


async def test_a_step_on_a_channel_without_content_or_without_a_window_is_refused(api) -> None:
    for step in (
        {"from": "push", "to": "email", "when": "failed"},
        {"from": "push", "to": "sms", "when": "not_delivered"},
        {"from": "push", "to": "sms", "when": "not_read", "within": 60},
    ):
        refused = await api.put("/v1/templates/bad", json=template([step]))
        assert refused.status_code == 422, (step, refused.text)
        assert "fallback" in refused.text
