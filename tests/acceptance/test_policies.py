"""The seven policies through the API, on both counters backends (in-process and Redis) and both databases.

Each test states a situation a user or an operator would recognise ("a user who turned SMS off", "a marketing
message at 22:00 in Shanghai") and checks what the send answered, what the timeline says decided, and what
actually reached the provider.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.domain import model
from clarion.domain.policy.decision import ALLOW, Candidate, Drop
from clarion.settings import Settings
from tests.conftest import (
    API_KEY,
    REDIS_URL,
    connect_redis,
    disconnect_redis,
    drain,
    put_template,
    put_user,
    set_approval,
    sink,
)

PHONE = "+8613800138000"


@pytest.fixture(autouse=True)
async def _no_review(clarion: bootstrap.Clarion) -> None:
    """Marketing templates here are sendable once saved: review is tested in test_template_versions."""
    await set_approval(clarion, levels={})


@pytest.fixture(params=["memory", "redis"])
async def settings(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Settings]:
    """The suite's settings, with the counters in process or in Redis (its own key prefix per test)."""
    if request.param == "memory":
        yield settings
        return
    client = await connect_redis()
    yield settings.model_copy(update={"redis_url": REDIS_URL, "redis_prefix": f"t{uuid.uuid4().hex[:8]}:"})
    await disconnect_redis(client)


async def send(api: httpx.AsyncClient, template: str, to: str | list[str], **body: Any) -> list[dict[str, Any]]:
    response = await api.post("/v1/messages", json={"template": template, "to": to, **body})
    assert response.status_code == 202, response.text
    return response.json()["messages"]


async def deliveries(api: httpx.AsyncClient, message_id: str) -> dict[str, dict[str, Any]]:
    """The message's deliveries by channel."""
    detail = (await api.get(f"/v1/messages/{message_id}")).json()
    return {d["channel"]: d for d in detail["deliveries"]}


async def put(api: httpx.AsyncClient, path: str, body: Any) -> dict[str, Any]:
    response = await api.put(path, json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def anytime(api: httpx.AsyncClient) -> None:
    """Marketing at any hour: most tests are not about the sending window, and must not depend on the clock."""
    await put(api, "/v1/policies/settings", {"send_windows": {}})


# -- 1. consent and preferences --------------------------------------------------------------------------------


async def test_a_user_who_turned_sms_off_gets_email_only(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE, "email": "li@example.com"})
    await put(api, "/v1/users/u1/preferences", {"channels": {"sms": False}})
    await put_template(
        api,
        "shipped",
        category="notification",
        channels={"sms": {"text": "shipped"}, "email": {"subject": "Shipped", "text": "on its way"}},
    )
    [message] = await send(api, "shipped", "u1")
    assert message["status"] == "queued"
    by_channel = await deliveries(api, message["id"])
    assert by_channel["email"]["status"] == "queued"
    sms = by_channel["sms"]
    assert sms["status"] == "filtered"
    assert sms["decided_by"]["policy"] == "consent"
    assert sms["decided_by"]["reason"] == "opted_out: the user turned sms off"
    assert await drain(clarion) == 1
    assert sink(clarion, "sms") == [] and len(sink(clarion, "email")) == 1


async def test_marketing_opt_in_mode_needs_the_users_consent(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await anytime(api)
    await put(api, "/v1/policies/settings", {"marketing_consent": "opt_in"})
    await put_user(api, "yes", addresses={"sms": PHONE})
    await put_user(api, "unknown", addresses={"sms": PHONE})
    await put(api, "/v1/users/yes/preferences", {"marketing_consent": True})
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "sale"}})
    answers = {m["user_id"]: m["status"] for m in await send(api, "promo", ["yes", "unknown"])}
    assert answers == {"yes": "queued", "unknown": "filtered"}


async def test_a_verification_code_ignores_preferences(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put(api, "/v1/users/u1/preferences", {"channels": {"sms": False}, "do_not_disturb": "00:00-23:59"})
    await put_template(api, "code", category="verification", channels={"sms": {"text": "code {code}"}})
    [message] = await send(api, "code", "u1", data={"code": "1234"})
    assert message["status"] == "queued"


# -- 2. suppressions -------------------------------------------------------------------------------------------


async def test_an_address_suppression_stops_mail_whoever_the_user(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put_user(api, "a", addresses={"email": "Shared@Example.com", "sms": PHONE})
    created = await api.post(
        "/v1/suppressions", json={"address": "shared@example.com", "source": "complaint", "reason": "spam report"}
    )
    assert created.status_code == 201, created.text
    await put_template(
        api,
        "notice",
        category="notification",
        channels={"email": {"subject": "Hi", "text": "news"}, "sms": {"text": "news"}},
    )
    [message] = await send(api, "notice", "a")
    by_channel = await deliveries(api, message["id"])
    assert by_channel["sms"]["status"] == "queued"
    email = by_channel["email"]
    assert email["status"] == "filtered"
    assert email["decided_by"]["policy"] == "suppression"
    assert email["decided_by"]["detail"]["source"] == "complaint"


async def test_a_marketing_unsubscribe_leaves_transactional_mail(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await anytime(api)
    await put_user(api, "u1", addresses={"sms": PHONE})
    created = await api.post("/v1/suppressions", json={"user_id": "u1", "category": "marketing"})
    assert created.status_code == 201, created.text
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "sale"}})
    await put_template(api, "receipt", category="transactional", channels={"sms": {"text": "paid"}})
    assert [m["status"] for m in await send(api, "promo", "u1")] == ["filtered"]
    assert [m["status"] for m in await send(api, "receipt", "u1")] == ["queued"]


async def test_profiles_handed_over_without_their_suppressions_are_checked_all_the_same(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    # The stage reads the suppressions of users that did not come through the profile loader itself.
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_user(api, "u2", addresses={"sms": "+8613900139000"})
    created = await api.post("/v1/suppressions", json={"address": PHONE, "source": "sms_reply"})
    assert created.status_code == 201, created.text
    await put_template(api, "notice", category="notification", channels={"sms": {"text": "news"}})
    template = await clarion.catalog.template("notice")
    assert template is not None
    loaded = await clarion.intake.users.load_many(["u1", "u2"])
    now = datetime.now(UTC)
    for bare in (False, True):
        users = [dataclasses.replace(loaded[u], suppressions=None) if bare else loaded[u] for u in ("u1", "u2")]
        candidates = [
            Candidate("m", user, template, model.Channel.SMS, now, user.address_for(model.Channel.SMS))
            for user in users
        ]
        screened = await clarion.policies.before_render(candidates)
        first, second = screened.decisions
        assert isinstance(first, Drop) and first.policy == "suppression"
        assert second is ALLOW


# -- 3. quiet hours --------------------------------------------------------------------------------------------

# 22:00 in Shanghai; the marketing window 09:00-20:00 opens again at 09:00 the next morning (01:00 UTC).
NIGHT = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
MORNING = datetime(2026, 3, 11, 1, 0, tzinfo=UTC)


async def test_marketing_at_night_is_deferred_to_the_morning_and_then_sent(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put_user(api, "u1", timezone="Asia/Shanghai", addresses={"sms": PHONE})
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "sale"}})
    clarion.intake.clock = lambda: NIGHT
    [message] = await send(api, "promo", "u1")
    assert message["status"] == "deferred"
    sms = (await deliveries(api, message["id"]))["sms"]
    assert sms["decided_by"]["policy"] == "quiet_hours"
    assert sms["decided_by"]["detail"]["timezone"] == "Asia/Shanghai"
    assert datetime.fromisoformat(sms["decided_by"]["detail"]["next_open"]) == MORNING

    clarion.dispatcher.clock = lambda: MORNING - timedelta(minutes=1)
    assert await drain(clarion) == 0  # not yet
    clarion.dispatcher.clock = lambda: MORNING + timedelta(seconds=1)
    assert await drain(clarion) == 1
    sms = (await deliveries(api, message["id"]))["sms"]
    assert sms["status"] == "sent"
    assert [e["status"] for e in sms["timeline"]][:2] == ["deferred", "sending"]


async def test_a_template_can_drop_instead_of_defer_and_codes_are_never_held(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put_user(api, "u1", timezone="Asia/Shanghai", addresses={"sms": PHONE})
    await put_template(
        api, "flash", category="marketing", policy={"quiet_hours": "drop"}, channels={"sms": {"text": "1h sale"}}
    )
    await put_template(api, "code", category="verification", channels={"sms": {"text": "code {c}"}})
    clarion.intake.clock = lambda: NIGHT
    [dropped] = await send(api, "flash", "u1")
    assert dropped["status"] == "filtered"
    assert (await deliveries(api, dropped["id"]))["sms"]["decided_by"]["detail"]["behaviour"] == "drop"
    assert [m["status"] for m in await send(api, "code", "u1", data={"c": "1"})] == ["queued"]


async def test_the_users_own_do_not_disturb_holds_notifications(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put_user(api, "u1", timezone="Asia/Shanghai", addresses={"sms": PHONE})
    await put(api, "/v1/users/u1/preferences", {"do_not_disturb": "21:00-08:00"})
    await put_template(api, "digest", category="notification", channels={"sms": {"text": "digest"}})
    clarion.intake.clock = lambda: NIGHT
    [message] = await send(api, "digest", "u1")
    assert message["status"] == "deferred"
    detail = (await deliveries(api, message["id"]))["sms"]["decided_by"]["detail"]
    assert detail["kind"] == "do_not_disturb"
    assert datetime.fromisoformat(detail["next_open"]) == datetime(2026, 3, 11, 0, 0, tzinfo=UTC)


# -- 4. frequency caps -----------------------------------------------------------------------------------------


async def test_a_cap_counts_only_what_was_queued(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await anytime(api)
    await put(api, "/v1/policies/caps/marketing-sms", {"limit": 2, "window": {"unit": "day"}, "channel": "sms"})
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "sale {n}"}})
    statuses = [(await send(api, "promo", "u1", data={"n": n}))[0]["status"] for n in range(3)]
    assert statuses == ["queued", "queued", "filtered"]
    [third] = await send(api, "promo", "u1", data={"n": 9})
    decided = (await deliveries(api, third["id"]))["sms"]["decided_by"]
    assert decided["policy"] == "caps"
    assert decided["detail"] == {"cap": "marketing-sms", "limit": 2, "count": 2, "window": {"unit": "day"}}


async def test_dropped_messages_leave_the_cap_untouched(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await anytime(api)
    await put(api, "/v1/policies/caps/one-a-day", {"limit": 1, "window": {"unit": "day"}})
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "sale {n}"}})
    await put(api, "/v1/keyword-lists/banned", {"action": "block", "words": ["casino"]})
    assert [m["status"] for m in await send(api, "promo", "u1", data={"n": "casino"})] == ["filtered"]
    assert [m["status"] for m in await send(api, "promo", "u1", data={"n": 1})] == ["queued"]


async def test_protected_messages_are_counted_but_never_refused(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await anytime(api)
    await put(api, "/v1/policies/caps/sms-day", {"limit": 2, "window": {"unit": "day"}, "channel": "sms"})
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "code", category="verification", channels={"sms": {"text": "code {c}"}})
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "sale"}})
    codes = [(await send(api, "code", "u1", data={"c": c}))[0]["status"] for c in range(3)]
    assert codes == ["queued"] * 3
    [promo] = await send(api, "promo", "u1")
    assert promo["status"] == "filtered"
    assert (await deliveries(api, promo["id"]))["sms"]["decided_by"]["detail"]["count"] == 3


async def test_a_template_exempt_from_caps_is_neither_counted_nor_refused(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await anytime(api)
    await put(api, "/v1/policies/caps/one", {"limit": 1, "window": {"seconds": 3600}})
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(
        api, "alert", category="notification", policy={"exempt_caps": True}, channels={"sms": {"text": "a {n}"}}
    )
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "sale"}})
    assert [(await send(api, "alert", "u1", data={"n": n}))[0]["status"] for n in range(3)] == ["queued"] * 3
    assert [m["status"] for m in await send(api, "promo", "u1")] == ["queued"]


async def test_a_per_department_cap_counts_each_department_apart(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await anytime(api)
    cap = {"limit": 1, "window": {"unit": "day"}, "channel": "sms", "per_department": True}
    await put(api, "/v1/policies/caps/dept", cap)
    await put_user(api, "u1", addresses={"sms": PHONE})
    for key, department in (("a1", "orders"), ("a2", "orders"), ("b1", "growth")):
        await put_template(
            api, key, category="notification", department=department, channels={"sms": {"text": f"from {key}"}}
        )
    statuses = {key: (await send(api, key, "u1"))[0]["status"] for key in ("a1", "a2", "b1")}
    assert statuses == {"a1": "queued", "a2": "filtered", "b1": "queued"}


# -- 5. dedup --------------------------------------------------------------------------------------------------


async def test_the_same_content_twice_is_sent_once(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "shipped", channels={"sms": {"text": "order {o} shipped"}})
    first = await send(api, "shipped", "u1", data={"o": "A1"})
    again = await send(api, "shipped", "u1", data={"o": "A1"})
    other = await send(api, "shipped", "u1", data={"o": "A2"})
    assert [m[0]["status"] for m in (first, again, other)] == ["queued", "filtered", "queued"]
    decided = (await deliveries(api, again[0]["id"]))["sms"]["decided_by"]
    assert decided["policy"] == "dedup"
    assert decided["reason"].startswith("duplicate:")
    assert decided["detail"]["window_seconds"] == 300
    assert await drain(clarion) == 2


async def test_a_business_key_dedups_different_content(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "paid", channels={"sms": {"text": "paid at {t}"}})
    a = await send(api, "paid", "u1", data={"t": "10:00"}, dedup_key="order-7")
    b = await send(api, "paid", "u1", data={"t": "10:01"}, dedup_key="order-7")
    assert [a[0]["status"], b[0]["status"]] == ["queued", "filtered"]
    detail = (await deliveries(api, b[0]["id"]))["sms"]["decided_by"]["detail"]
    assert detail["dedup_key"] == "order-7"


async def test_a_template_may_turn_dedup_off(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "ping", policy={"dedup_seconds": 0}, channels={"sms": {"text": "ping"}})
    assert [(await send(api, "ping", "u1"))[0]["status"] for _ in range(2)] == ["queued", "queued"]


# -- 6. keywords -----------------------------------------------------------------------------------------------


async def test_a_block_list_filters_and_a_mask_list_masks(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "say", channels={"sms": {"text": "{what}"}})
    await put(api, "/v1/keyword-lists/illegal", {"action": "block", "words": ["赌博"]})
    await put(api, "/v1/keyword-lists/rivals", {"action": "mask", "words": ["AcmePush"]})
    [blocked] = await send(api, "say", "u1", data={"what": "网络赌博彩票"})
    assert blocked["status"] == "filtered"
    decided = (await deliveries(api, blocked["id"]))["sms"]["decided_by"]
    assert decided["policy"] == "keywords"
    assert "赌博" in decided["reason"] and "illegal" in decided["reason"]
    [masked] = await send(api, "say", "u1", data={"what": "better than acmepush"})
    assert masked["status"] == "queued"
    await drain(clarion)
    assert [r["content"]["text"] for r in sink(clarion)] == ["better than ***"]
    timeline = (await deliveries(api, masked["id"]))["sms"]["timeline"]
    assert timeline[0]["detail"]["masked"] == [{"field": "text", "word": "AcmePush", "list": "rivals"}]


# -- 7. the safety valve ---------------------------------------------------------------------------------------


async def test_the_safety_valve_stops_a_runaway_sender_even_for_codes(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put(api, "/v1/policies/settings", {"safety_valve": {"limit": 3, "window": {"seconds": 3600}}})
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "code", category="verification", channels={"sms": {"text": "code {c}"}})
    statuses = [(await send(api, "code", "u1", data={"c": c}))[0]["status"] for c in range(4)]
    assert statuses == ["queued", "queued", "queued", "filtered"]


async def test_a_disabled_policy_does_not_decide(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await put(api, "/v1/policies/settings", {"enabled": {"dedup": False}})
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "same", channels={"sms": {"text": "same"}})
    assert [(await send(api, "same", "u1"))[0]["status"] for _ in range(2)] == ["queued", "queued"]


# -- explain: the dry run --------------------------------------------------------------------------------------


async def test_check_reports_every_policy_and_counts_nothing(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put(api, "/v1/policies/caps/one", {"limit": 1, "window": {"unit": "day"}, "channel": "sms"})
    await put_user(api, "u1", timezone="Asia/Shanghai", addresses={"sms": PHONE})
    await put_template(api, "promo", category="marketing", channels={"sms": {"text": "sale"}})
    body = {"user_id": "u1", "template": "promo", "at": MORNING.isoformat()}
    for _ in range(3):
        answer = await api.post("/v1/policies/check", json=body)
        assert answer.status_code == 200, answer.text
    report = answer.json()["channels"][0]
    assert report["decision"]["decision"] == "allow"
    assert [p["policy"] for p in report["policies"]][:4] == ["consent", "suppression", "quiet_hours", "keywords"]
    assert {c["policy"]: c.get("count") for c in report["counters"]} == {"dedup": None, "caps": 0, "safety_valve": 0}

    night = (await api.post("/v1/policies/check", json={**body, "at": NIGHT.isoformat()})).json()
    assert night["channels"][0]["decision"]["decision"] == "defer"

    clarion.intake.clock = lambda: MORNING
    assert [m["status"] for m in await send(api, "promo", "u1")] == ["queued"]  # the checks consumed nothing
    after = (await api.post("/v1/policies/check", json=body)).json()["channels"][0]
    assert after["decision"]["decision"] == "drop"
    assert after["decision"]["policy"] == "dedup"  # the same content was just sent
    caps = {c["policy"]: c for c in after["counters"]}
    assert caps["caps"]["count"] == 1 and caps["dedup"]["seen"] is True


async def test_check_refuses_bad_input_with_a_named_field(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "t", channels={"sms": {"text": "x"}})
    missing = await api.post("/v1/policies/check", json={"user_id": "nobody", "template": "t"})
    assert missing.status_code == 404
    naive = await api.post("/v1/policies/check", json={"user_id": "u1", "template": "t", "at": "2026-01-01T10:00:00"})
    assert naive.status_code == 422
    assert naive.json()["error"]["details"]["field"] == "at"
    channel = await api.post("/v1/policies/check", json={"user_id": "u1", "template": "t", "channels": ["email"]})
    assert channel.status_code == 422
    assert channel.json()["error"]["details"]["unknown"] == ["email"]


# -- several processes racing for the last slot ------------------------------------------------------------------


async def test_two_processes_racing_never_exceed_a_cap(settings: Settings, clarion: bootstrap.Clarion) -> None:
    """Two Clarion instances share the database (and, with Redis, the counters); 40 concurrent sends of
    different content race for a cap of 5. In-process counters are per process, so there the test runs one."""
    other = bootstrap.build(settings) if settings.redis_url else clarion
    if other is not clarion:
        await other.start(workers=0)
    try:
        clients = []
        for services in {id(clarion): clarion, id(other): other}.values():
            transport = httpx.ASGITransport(app=create_app(clarion=services))
            clients.append(
                httpx.AsyncClient(
                    transport=transport, base_url="http://clarion.test", headers={"Authorization": f"Bearer {API_KEY}"}
                )
            )
        api = clients[0]
        await put(api, "/v1/policies/caps/five", {"limit": 5, "window": {"unit": "day"}, "channel": "sms"})
        await put_user(api, "u1", addresses={"sms": PHONE})
        await put_template(api, "note", category="notification", channels={"sms": {"text": "note {n}"}})
        results = await asyncio.gather(
            *(send(clients[n % len(clients)], "note", "u1", data={"n": n}) for n in range(40))
        )
        statuses = [r[0]["status"] for r in results]
        assert statuses.count("queued") == 5
        assert statuses.count("filtered") == 35
        for client in clients:
            await client.aclose()
    finally:
        if other is not clarion:
            await other.close()
