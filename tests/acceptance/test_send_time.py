"""Campaigns with ``"send_time": "optimal"``: each user's deliveries wait for the local hour at which the user
responds (tracked activity, inbox reads), within the next 24 hours; a user with no data gets the hour of the
run's users as a whole; the user's do-not-disturb period is never chosen; API sends and "now" campaigns go at
once; a bad value is a 422 naming the field."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from clarion import bootstrap
from tests.acceptance.test_campaigns import ANA_KEY, campaign, launch, run_all
from tests.conftest import drain, put_template, put_user, set_approval, set_policies

SHANGHAI, TOKYO, BERLIN, NEW_YORK = (
    ZoneInfo(z) for z in ("Asia/Shanghai", "Asia/Tokyo", "Europe/Berlin", "America/New_York")
)
DAYS = 27  # of history, inside the four weeks the runner reads


@pytest.fixture(autouse=True)
async def _setup(clarion: bootstrap.Clarion, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    await set_policies(clarion, send_windows={})
    await set_approval(clarion, levels={})
    await clarion.keys.create("ana", ("approver",), key=ANA_KEY)
    await put_template(api, "digest", category="notification", channels={"inbox": {"title": "Weekly", "body": "news"}})


def audience(clarion: bootstrap.Clarion, monkeypatch: pytest.MonkeyPatch, ids: Sequence[str]) -> None:
    """The (fake) segment engine returns ``ids``, as in ``test_campaigns``."""

    async def fake(spec: Any) -> list[str]:
        return list(ids)

    monkeypatch.setattr(clarion.segments, "audience", fake)


def next_local(hour: int, zone: ZoneInfo, now: datetime) -> datetime:
    """The first start of ``hour`` o'clock in ``zone`` at or after ``now`` (UTC)."""
    local = now.astimezone(zone)
    at = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if at < local:
        at = (local + timedelta(days=1)).replace(hour=hour, minute=0, second=0, microsecond=0)
    return at.astimezone(UTC)


async def active_at(api: httpx.AsyncClient, user_id: str, zone: ZoneInfo, hour: int, minute: int) -> None:
    """``user_id`` was active every day of the last ``DAYS`` at ``hour:minute`` their time."""
    today = datetime.now(UTC).astimezone(zone)
    events = [
        {
            "user_id": user_id,
            "event": "app_open",
            "at": (today - timedelta(days=d)).replace(hour=hour, minute=minute, second=0, microsecond=0).isoformat(),
        }
        for d in range(1, DAYS + 1)
    ]
    response = await api.post("/v1/track", json={"events": events})
    assert response.status_code == 200, response.text


async def run_ats(api: httpx.AsyncClient, clarion: bootstrap.Clarion, users: Sequence[str]) -> dict[str, Any]:
    """Run the campaign; then each user's newest message's inbox delivery (with its timeline), by user."""
    await run_all(clarion.campaigns)
    out = {}
    for user_id in users:
        record = await api.get(f"/v1/users/{user_id}/messages", params={"limit": 1})
        [newest] = record.json()["messages"]
        shown = (await api.get(f"/v1/messages/{newest['id']}")).json()
        [out[user_id]] = shown["deliveries"]
    return out


def run_at(delivery: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(delivery["run_at"])


async def test_each_user_waits_for_their_own_hour_and_a_user_without_data_for_the_populations(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the evening crowd: three users active at 20:30 their time, in two zones
    for user_id, zone in (("sh", SHANGHAI), ("tk1", TOKYO), ("tk2", TOKYO)):
        await put_user(api, user_id, timezone=zone.key)
        await active_at(api, user_id, zone, 20, 30)
    await put_user(api, "be", timezone=BERLIN.key)  # an early riser
    await active_at(api, "be", BERLIN, 7, 15)
    await put_user(api, "new", timezone=NEW_YORK.key)  # nothing known
    # a reader: thirty inbox items read now (the timeline's reads count as responses)
    await put_user(api, "reader", timezone=NEW_YORK.key)
    await put_template(api, "note", channels={"inbox": {"title": "Note {n}", "body": "item {n}"}})
    for n in range(30):
        sent = await api.post("/v1/messages", json={"template": "note", "to": ["reader"], "data": {"n": n}})
        assert sent.status_code == 202, sent.text
    await drain(clarion)
    items = (await api.get("/v1/users/reader/inbox", params={"limit": 100})).json()["items"]
    assert len(items) == 30
    for item in items:
        assert (await api.post(f"/v1/users/reader/inbox/{item['message_id']}/read")).status_code == 200
    read_at = datetime.now(UTC)

    everyone = ["sh", "tk1", "tk2", "be", "new", "reader"]
    audience(clarion, monkeypatch, everyone)
    await campaign(api, "weekly", template="digest", send_time="optimal")
    assert (await api.get("/v1/campaigns/weekly")).json()["send_time"] == "optimal"
    await launch(api, "weekly")
    started = datetime.now(UTC)
    deliveries = await run_ats(api, clarion, everyone)

    assert run_at(deliveries["sh"]) == next_local(20, SHANGHAI, started)
    assert run_at(deliveries["tk1"]) == run_at(deliveries["tk2"]) == next_local(20, TOKYO, started)
    assert run_at(deliveries["be"]) == next_local(7, BERLIN, started)
    assert run_at(deliveries["new"]) == next_local(20, NEW_YORK, started)  # the crowd's evening, in New York
    # the reads (all in this hour) make this hour or the next the reader's, against the crowd's evening
    read_hour = read_at.astimezone(NEW_YORK).hour
    assert run_at(deliveries["reader"]).astimezone(NEW_YORK).hour in (read_hour, (read_hour + 1) % 24)
    for delivery in deliveries.values():
        assert delivery["status"] == "queued"
        assert started <= run_at(delivery) < started + timedelta(hours=24)
        [queued] = delivery["timeline"]
        assert queued["detail"] == {"send_time": "optimal", "run_at": run_at(delivery).isoformat()}
    assert await drain(clarion) == 0  # nothing is due before its hour


async def test_the_users_do_not_disturb_period_is_never_their_send_hour(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, monkeypatch: pytest.MonkeyPatch
) -> None:
    await put_user(api, "owl", timezone=SHANGHAI.key)
    quiet = await api.put("/v1/users/owl/preferences", json={"do_not_disturb": "22:00-08:00"})
    assert quiet.status_code == 200, quiet.text
    await active_at(api, "owl", SHANGHAI, 23, 10)
    await put_user(api, "lark", timezone=SHANGHAI.key)
    await active_at(api, "lark", SHANGHAI, 23, 10)
    audience(clarion, monkeypatch, ["owl", "lark"])
    await campaign(api, "late", template="digest", send_time="optimal")
    await launch(api, "late")
    started = datetime.now(UTC)
    deliveries = await run_ats(api, clarion, ["owl", "lark"])

    assert run_at(deliveries["lark"]) == next_local(23, SHANGHAI, started)
    owl = run_at(deliveries["owl"]).astimezone(SHANGHAI)
    assert 8 <= owl.hour < 22 and owl.minute == 0  # the best hour they may be reached at, not their 23:00


async def test_api_sends_and_campaigns_sent_now_are_not_held(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, monkeypatch: pytest.MonkeyPatch
) -> None:
    await put_user(api, "sh", timezone=SHANGHAI.key)
    await active_at(api, "sh", SHANGHAI, 20, 30)
    before = datetime.now(UTC)
    sent = await api.post("/v1/messages", json={"template": "digest", "to": ["sh"]})
    [message] = sent.json()["messages"]
    [delivery] = (await api.get(f"/v1/messages/{message['id']}")).json()["deliveries"]
    assert before - timedelta(seconds=1) <= run_at(delivery) <= datetime.now(UTC)

    audience(clarion, monkeypatch, ["sh"])
    await campaign(api, "now", template="digest")
    await launch(api, "now")
    started = datetime.now(UTC)
    deliveries = await run_ats(api, clarion, ["sh"])
    assert started - timedelta(seconds=1) <= run_at(deliveries["sh"]) <= datetime.now(UTC)
    assert await drain(clarion) == 1


@pytest.mark.parametrize("value", ["later", 3, ["optimal"]])
async def test_an_unknown_send_time_is_refused_naming_the_field(api: httpx.AsyncClient, value: Any) -> None:
    response = await api.put(
        "/v1/campaigns/bad", json={"template": "digest", "audience": {"segment": "all"}, "send_time": value}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["field"] == "send_time"
