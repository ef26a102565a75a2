"""A delivery that waited — deferred to the end of quiet hours, or behind a backlog — is judged again against the
user's own wishes when it is claimed: someone who unsubscribes or turns a channel off in the meantime is not sent
what was queued before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from tests.acceptance.test_policies import MORNING, NIGHT, PHONE, deliveries, put, send
from tests.conftest import drain, put_template, put_user, set_approval, sink


@pytest.fixture(autouse=True)
async def _no_review(clarion: bootstrap.Clarion) -> None:
    await set_approval(clarion, levels={})


async def deferred_promo(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> str:
    """A marketing SMS sent to u1 at night in Shanghai: deferred to the morning. Returns the message id."""
    await put_user(api, "u1", timezone="Asia/Shanghai", addresses={"sms": PHONE})
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "sale"}})
    clarion.intake.clock = lambda: NIGHT
    [message] = await send(api, "promo", "u1")
    assert message["status"] == "deferred"
    return message["id"]


async def in_the_morning(api: httpx.AsyncClient, clarion: bootstrap.Clarion, message_id: str) -> dict[str, Any]:
    clarion.dispatcher.clock = lambda: MORNING + timedelta(seconds=1)
    assert await drain(clarion) == 1  # claimed and judged, whatever the judgement
    return (await deliveries(api, message_id))["sms"]


async def test_an_unsubscribe_while_deferred_stops_the_message(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    message_id = await deferred_promo(api, clarion)
    response = await api.post(
        "/v1/suppressions", json={"user_id": "u1", "category": "marketing", "source": "user_request"}
    )
    assert response.status_code in (200, 201), response.text

    sms = await in_the_morning(api, clarion, message_id)
    assert sms["status"] == "filtered"
    assert [e["status"] for e in sms["timeline"]] == ["deferred", "sending", "filtered"]
    last = sms["timeline"][-1]
    assert last["reason"].startswith("unsubscribed: user u1 is suppressed for marketing")
    assert last["detail"]["policy"] == "suppression" and last["detail"]["judged"] == "at dispatch"
    assert sink(clarion) == []
    assert (await api.get(f"/v1/messages/{message_id}")).json()["status"] == "filtered"


async def test_a_channel_turned_off_while_deferred_stops_the_message(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    message_id = await deferred_promo(api, clarion)
    await put(api, "/v1/users/u1/preferences", {"channels": {"sms": False}})

    sms = await in_the_morning(api, clarion, message_id)
    assert sms["status"] == "filtered"
    assert sms["timeline"][-1]["reason"] == "opted_out: the user turned sms off"
    assert sink(clarion) == []


async def test_an_unrelated_change_while_deferred_lets_the_message_go(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    message_id = await deferred_promo(api, clarion)
    await put(api, "/v1/users/u1/preferences", {"channels": {"email": False}})  # e-mail off; this is an SMS
    response = await api.post("/v1/suppressions", json={"address": "+8613900000000", "source": "admin"})
    assert response.status_code in (200, 201), response.text  # someone else's number

    sms = await in_the_morning(api, clarion, message_id)
    assert sms["status"] == "sent"
    assert [r["delivery_id"] for r in sink(clarion)] == [sms["id"]]


async def test_with_the_suppression_policy_off_an_unsubscribe_does_not_decide(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    message_id = await deferred_promo(api, clarion)
    await api.post("/v1/suppressions", json={"user_id": "u1", "source": "admin"})
    await put(api, "/v1/policies/settings", {"enabled": {"suppression": False}})

    sms = await in_the_morning(api, clarion, message_id)
    assert sms["status"] == "sent"


async def test_an_unsubscribe_while_queued_behind_a_backlog_stops_the_message(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    """Not deferred, only waiting its turn (a campaign's backlog ahead of it): judged again all the same."""
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "note", category="notification", channels={"sms": {"text": "hello"}})
    [message] = await send(api, "note", "u1")
    assert message["status"] == "queued"
    response = await api.post("/v1/suppressions", json={"address": PHONE, "source": "complaint"})
    assert response.status_code in (200, 201), response.text

    queued_at = datetime.now(UTC)
    clarion.dispatcher.clock = lambda: queued_at + timedelta(seconds=30)  # its turn comes half a minute later
    assert await drain(clarion) == 1
    sms = (await deliveries(api, message["id"]))["sms"]
    assert sms["status"] == "filtered"
    assert sms["timeline"][-1]["reason"].startswith(f"unsubscribed: address {PHONE}")
    assert sink(clarion) == []
