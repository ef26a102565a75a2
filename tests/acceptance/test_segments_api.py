"""Segments and ID lists through the HTTP API, and the segment index inside running Clarion processes: built from
the store on start, changed at once by this process's writes, catching up with other processes' writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clarion import bootstrap
from clarion.domain import errors
from clarion.segments import query
from clarion.settings import Settings
from clarion.store import tables as t
from tests.conftest import put_user

VIP_IN_BEIJING = {"and": [{"tag": "vip"}, {"attr": "city", "op": "=", "value": "Beijing"}]}


async def seed_users(api: Any) -> None:
    soon = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    await put_user(api, "u1", tags=["vip"], attributes={"city": "Beijing", "age": 31, "expires_at": soon})
    await put_user(api, "u2", tags=["vip"], attributes={"city": "Shanghai", "age": 25, "expires_at": later})
    await put_user(api, "u3", tags=["vip", "new"], attributes={"city": "Beijing", "age": 45})
    await put_user(api, "u4", tags=[], attributes={"city": "Beijing", "age": 52, "expires_at": soon})
    await put_user(api, "u5", tags=["new"], attributes={"age": 19})


async def count_of(api: Any, conditions: dict[str, Any]) -> int:
    response = await api.post("/v1/segments:count", json={"conditions": conditions})
    assert response.status_code == 200, response.text
    return response.json()["count"]


async def add_event(clarion: bootstrap.Clarion, user_id: str, event: str, at: datetime) -> None:
    async def job(conn: Any) -> None:
        await conn.execute(t.user_events.insert().values(user_id=user_id, event=event, at=at, properties={}))

    await clarion.db.write(job)


async def backdate_users(clarion: bootstrap.Clarion) -> None:
    async def job(conn: Any) -> None:
        await conn.execute(t.users.update().values(updated_at=datetime.now(UTC) - timedelta(hours=1)))

    await clarion.db.write(job)


@pytest.fixture
async def other(settings: Settings) -> AsyncIterator[bootstrap.Clarion]:
    """A second Clarion process on the same database, without a background poll: tests call ``refresh()``."""
    services = bootstrap.build(settings)
    services.segments.poll_seconds = 0
    yield services
    await services.close()


# -- segments ------------------------------------------------------------------------------------------------


async def test_a_segment_is_saved_read_listed_and_deleted(api) -> None:
    await seed_users(api)
    created = await api.put("/v1/segments/vip-bj", json={"name": "VIPs in Beijing", "conditions": VIP_IN_BEIJING})
    assert created.status_code == 201, created.text
    assert created.json()["conditions"] == VIP_IN_BEIJING
    assert created.json()["count"] == 2

    replaced = await api.put("/v1/segments/vip-bj", json={"name": "VIPs", "conditions": {"tag": "vip"}})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["count"] == 3
    assert replaced.json()["created_at"] == created.json()["created_at"]

    got = await api.get("/v1/segments/vip-bj")
    assert got.status_code == 200
    assert (got.json()["name"], got.json()["conditions"]) == ("VIPs", {"tag": "vip"})
    await api.put("/v1/segments/all-new", json={"conditions": {"tag": "new"}})
    listed = await api.get("/v1/segments")
    assert [s["key"] for s in listed.json()["segments"]] == ["all-new", "vip-bj"]

    assert (await api.delete("/v1/segments/vip-bj")).status_code == 204
    assert (await api.get("/v1/segments/vip-bj")).status_code == 404
    assert (await api.get("/v1/segments/vip-bj/count")).status_code == 404
    assert (await api.delete("/v1/segments/vip-bj")).status_code == 404


@pytest.mark.parametrize(
    ("conditions", "path"),
    [
        ({"and": [{"tag": "vip"}, {"attr": "age", "op": "~", "value": 3}]}, "conditions.and[1].op"),
        ({"or": [{"tag": "vip"}, {"event": "login", "within_days": 0}]}, "conditions.or[1].within_days"),
        ({"not": {"list": "no-such-list"}}, "conditions.not.list"),
        ({"and": [{"tag": "vip"}, {"attr": "age", "op": ">", "value": "old"}]}, "conditions.and[1].value"),
        (None, "conditions"),
    ],
)
async def test_a_bad_definition_is_refused_with_the_path_of_the_bad_node(api, conditions, path) -> None:
    await seed_users(api)
    response = await api.put("/v1/segments/bad", json={"conditions": conditions})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_segment"
    assert response.json()["error"]["details"]["path"] == path
    assert (await api.get("/v1/segments/bad")).status_code == 404  # nothing half-written
    assert (await api.post("/v1/segments:count", json={"conditions": conditions})).status_code == 422


async def test_count_and_sample_select_by_tags_attributes_and_timestamps(api) -> None:
    await seed_users(api)
    assert await count_of(api, {"tag": "vip"}) == 3
    assert await count_of(api, {"attr": "age", "op": ">", "value": 30}) == 3
    assert await count_of(api, {"and": [{"tag": "new"}, {"not": {"tag": "vip"}}]}) == 1
    assert await count_of(api, {"attr": "city", "op": "in", "value": ["Beijing", "Chengdu"]}) == 3
    # ISO strings are timestamps: u1 and u4 expire within 3 days, u2 in 30
    assert await count_of(api, {"attr": "expires_at", "op": "within_next", "days": 3}) == 2

    await api.put("/v1/segments/bj", json={"conditions": {"attr": "city", "op": "=", "value": "Beijing"}})
    counted = await api.get("/v1/segments/bj/count")
    assert counted.status_code == 200
    assert counted.json()["count"] == 3
    assert counted.json()["took_ms"] >= 0

    sample = await api.get("/v1/segments/bj/sample", params={"n": 2})
    assert sample.status_code == 200, sample.text
    users = sample.json()["users"]
    assert len(users) == 2
    assert {u["user_id"] for u in users} <= {"u1", "u3", "u4"}
    assert all(u["attributes"]["city"] == "Beijing" for u in users)
    everyone = await api.get("/v1/segments/bj/sample", params={"n": 20})
    assert sorted(u["user_id"] for u in everyone.json()["users"]) == ["u1", "u3", "u4"]
    assert next(u for u in everyone.json()["users"] if u["user_id"] == "u3")["tags"] == ["vip", "new"]


async def test_a_user_written_through_the_api_changes_counts_at_once(api) -> None:
    await seed_users(api)
    await api.put("/v1/segments/vip-bj", json={"conditions": VIP_IN_BEIJING})
    assert (await api.get("/v1/segments/vip-bj/count")).json()["count"] == 2

    await put_user(api, "u4", tags=["vip"], attributes={"city": "Beijing"})
    assert (await api.get("/v1/segments/vip-bj/count")).json()["count"] == 3
    await put_user(api, "u1", tags=["vip"], attributes={"city": "Shenzhen"})
    assert (await api.get("/v1/segments/vip-bj/count")).json()["count"] == 2
    await put_user(api, "u9", tags=["vip"], attributes={"city": "Beijing"})
    assert (await api.get("/v1/segments/vip-bj/count")).json()["count"] == 3
    assert (await api.delete("/v1/users/u3")).status_code == 204
    assert (await api.get("/v1/segments/vip-bj/count")).json()["count"] == 2


async def test_recorded_events_change_behaviour_segments(api, clarion) -> None:
    await seed_users(api)
    logged_in = {"event": "login", "within_days": 3}
    twice = {"event": "login", "count": 2, "within_days": 7}
    assert await count_of(api, logged_in) == 0

    now = datetime.now(UTC)
    await add_event(clarion, "u1", "login", now - timedelta(hours=2))
    await add_event(clarion, "u2", "login", now - timedelta(days=5))
    await add_event(clarion, "u2", "login", now - timedelta(days=1))
    await add_event(clarion, "u3", "login", now - timedelta(days=10))
    await clarion.segments.events_tracked()
    assert await count_of(api, logged_in) == 2
    assert await count_of(api, twice) == 1
    assert await count_of(api, {"event": "login"}) == 3

    await add_event(clarion, "u5", "login", now)
    await clarion.segments.events_tracked()
    assert await count_of(api, logged_in) == 3


async def test_the_index_is_rebuilt_from_the_store_on_start(api, clarion, settings) -> None:
    await seed_users(api)
    now = datetime.now(UTC)
    await add_event(clarion, "u1", "pay", now - timedelta(hours=1))
    await add_event(clarion, "u3", "pay", now - timedelta(days=2))
    await add_event(clarion, "u3", "pay", now - timedelta(days=1))
    upload = await api.post("/v1/lists", params={"key": "winners"}, content=b"u2\nu3\n")
    assert upload.status_code == 201, upload.text
    await backdate_users(clarion)  # so the new process finds them in its bulk load, not in its first catch-up

    fresh = bootstrap.build(settings)
    await fresh.start(workers=0)
    try:
        segments = fresh.segments
        assert await segments.count(query.parse(VIP_IN_BEIJING)) == 2
        assert await segments.count(query.parse({"attr": "age", "op": ">=", "value": 45})) == 2
        assert await segments.count(query.parse({"attr": "expires_at", "op": "within_next", "days": 3})) == 2
        assert await segments.count(query.parse({"event": "pay", "within_days": 3})) == 2
        assert await segments.count(query.parse({"event": "pay", "count": 2, "within_days": 3})) == 1
        assert await segments.count(query.parse({"and": [{"list": "winners"}, {"tag": "new"}]})) == 1
    finally:
        await fresh.close()


async def test_another_process_changes_are_picked_up_by_refresh(api, clarion, other) -> None:
    await seed_users(api)
    await other.start(workers=0)
    vip = query.parse({"tag": "vip"})
    assert await other.segments.count(vip) == 3

    await put_user(api, "u5", tags=["vip"])  # through the first process
    assert (await api.delete("/v1/users/u1")).status_code == 204
    await add_event(clarion, "u2", "login", datetime.now(UTC))
    await api.post("/v1/lists", params={"key": "l1"}, content=b"u2\nu4\n")
    assert await other.segments.count(vip) == 3  # the other process has not looked yet

    await other.segments.refresh()
    assert await other.segments.count(query.parse({"tag": "vip"})) == 4  # u5 added, u1's deletion not seen yet
    assert await other.segments.count(query.parse({"event": "login", "within_hours": 1})) == 1
    assert await other.segments.count(query.parse({"list": "l1"})) == 2

    await other.segments.refresh(deletions=True)
    assert await other.segments.count(vip) == 3
    assert await other.segments.audience({"list": "l1"}) == ["u2", "u4"]


async def test_the_background_poll_follows_another_process(api, settings) -> None:
    await put_user(api, "a1", tags=["x"])
    watcher = bootstrap.build(settings)
    watcher.segments.poll_seconds = 0.05
    await watcher.start(workers=0)
    try:
        assert await watcher.segments.count(query.parse({"tag": "x"})) == 1
        await put_user(api, "a2", tags=["x"])
        for _ in range(100):
            if await watcher.segments.count(query.parse({"tag": "x"})) == 2:
                break
            await asyncio.sleep(0.05)
        assert await watcher.segments.count(query.parse({"tag": "x"})) == 2
    finally:
        await watcher.close()


async def test_a_poll_does_not_read_again_what_settled_before_the_previous_one(api, other, monkeypatch) -> None:
    """Changes older than the previous poll's start minus LAG are settled: a big import is read once, not at
    every poll until a later change comes."""
    from clarion.segments import service as segment_service
    from clarion.store import segments as segment_store

    monkeypatch.setattr(segment_service, "LAG", timedelta(milliseconds=50))
    read: list[int] = []
    real = segment_store.users_updated_since

    async def counting(*args: Any) -> Any:
        page = await real(*args)
        read.append(len(page))
        return page

    monkeypatch.setattr(segment_store, "users_updated_since", counting)
    await other.start(workers=0)
    for i in range(5):
        await put_user(api, f"imp{i}", tags=["imported"])
    await other.segments.refresh()
    assert sum(read) == 5
    await asyncio.sleep(0.1)  # the import is now older than the last poll's start minus LAG
    await other.segments.refresh()  # reads them once more: they were within LAG of that poll
    read.clear()
    await other.segments.refresh()
    assert read == [0]
    assert await other.segments.count(query.parse({"tag": "imported"})) == 5


# -- ID lists ------------------------------------------------------------------------------------------------


async def test_a_list_of_user_ids_reports_unknown_ids_and_works_in_segments(api) -> None:
    await seed_users(api)
    body = b"user_id\nu1\nu3\nu5\nghost\nu1\n\n"
    response = await api.post("/v1/lists", params={"key": "incident-42", "name": "Incident 42"}, content=body)
    assert response.status_code == 201, response.text
    shown = response.json()
    assert (shown["kind"], shown["lines"], shown["size"], shown["matched"]) == ("user_id", 5, 4, 3)
    assert (shown["unknown"], shown["unknown_values"]) == (1, ["ghost"])

    assert await count_of(api, {"and": [{"list": "incident-42"}, {"tag": "new"}]}) == 2
    await put_user(api, "ghost", tags=["new"])  # an unknown id stays a member: created later, it is in the list
    assert await count_of(api, {"and": [{"list": "incident-42"}, {"tag": "new"}]}) == 3

    got = await api.get("/v1/lists/incident-42")
    assert got.status_code == 200
    assert (got.json()["name"], got.json()["size"], got.json()["unknown"]) == ("Incident 42", 4, 1)
    replaced = await api.post("/v1/lists", params={"key": "incident-42"}, content=b"u2\n")
    assert replaced.status_code == 200
    assert await count_of(api, {"list": "incident-42"}) == 1
    assert [item["key"] for item in (await api.get("/v1/lists")).json()["lists"]] == ["incident-42"]


async def test_a_phone_list_is_normalized_matched_and_its_unknowns_reported(api) -> None:
    await put_user(api, "p1", tags=["x"], addresses={"sms": "+8613800138000"})
    await put_user(api, "p2", tags=[], addresses={"sms": "+8613900139000"})
    await put_user(api, "p3", tags=["x"], addresses={"email": "p3@example.com"})
    csv = "phone,name\n+86 138-0013-8000,Li\n13900139000,Wang\n+8613700137000,Zhao\nnot-a-phone,?\n"
    response = await api.post(
        "/v1/lists",
        params={"key": "callers", "kind": "phone", "region": "CN"},
        files={"file": ("callers.csv", csv.encode(), "text/csv")},
    )
    assert response.status_code == 201, response.text
    shown = response.json()
    assert (shown["lines"], shown["size"], shown["matched"], shown["invalid"], shown["unknown"]) == (4, 2, 2, 1, 2)
    assert shown["unknown_values"] == ["not-a-phone", "+8613700137000"]
    assert await count_of(api, {"and": [{"list": "callers"}, {"tag": "x"}]}) == 1


async def test_an_email_list_matches_case_insensitively(api, clarion) -> None:
    await put_user(api, "e1", tags=["x"], addresses={"email": "Li@Example.com"})
    await put_user(api, "e2", tags=["x"], addresses={"email": "wang@example.com"})
    await put_user(api, "e3", tags=[], addresses={"email": "zhao@example.com"})
    body = b"LI@example.com\r\nzhao@example.com\r\nnobody@example.com\r\n"
    response = await api.post(
        "/v1/lists",
        params={"key": "mailing", "kind": "email"},
        content=body,
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 201, response.text
    assert (response.json()["size"], response.json()["matched"]) == (2, 2)
    assert response.json()["unknown_values"] == ["nobody@example.com"]
    assert await count_of(api, {"and": [{"list": "mailing"}, {"tag": "x"}]}) == 1
    assert await clarion.segments.audience({"list": "mailing"}) == ["e1", "e3"]


async def test_a_list_used_by_a_segment_cannot_be_deleted(api) -> None:
    await seed_users(api)
    await api.post("/v1/lists", params={"key": "l1"}, content=b"u1\n")
    await api.put("/v1/segments/uses-l1", json={"conditions": {"not": {"list": "l1"}}})
    refused = await api.delete("/v1/lists/l1")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["details"] == {"segments": ["uses-l1"]}
    await api.delete("/v1/segments/uses-l1")
    assert (await api.delete("/v1/lists/l1")).status_code == 204
    assert (await api.get("/v1/lists/l1")).status_code == 404
    assert (await api.post("/v1/segments:count", json={"conditions": {"list": "l1"}})).status_code == 422


async def test_an_upload_needs_a_file_and_a_known_kind(api) -> None:
    no_file = await api.post("/v1/lists", params={"key": "l"}, files={"other": ("a.txt", b"u1\n", "text/plain")})
    assert no_file.status_code == 422
    assert no_file.json()["error"]["details"]["field"] == "file"
    bad_kind = await api.post("/v1/lists", params={"key": "l", "kind": "wechat"}, content=b"u1\n")
    assert bad_kind.status_code == 422
    json_body = await api.post("/v1/lists", params={"key": "l"}, json=["u1"])
    assert json_body.status_code == 422
    assert (await api.get("/v1/lists/l")).status_code == 404


# -- audiences for campaigns ---------------------------------------------------------------------------------


async def test_an_audience_is_a_segment_a_list_or_both_minus_another(api, clarion) -> None:
    await seed_users(api)
    await api.put("/v1/segments/vip", json={"conditions": {"tag": "vip"}})
    await api.put("/v1/segments/bj", json={"conditions": {"attr": "city", "op": "=", "value": "Beijing"}})
    await api.post("/v1/lists", params={"key": "extra"}, content=b"u3\nu4\nu5\nghost\n")
    await api.post("/v1/lists", params={"key": "blocked"}, content=b"u3\n")
    segments = clarion.segments

    assert await segments.audience({"segment": "vip"}) == ["u1", "u2", "u3"]
    assert await segments.audience({"list": "extra"}) == ["u3", "u4", "u5"]  # ids that are no user are never sent to
    both = {"segment": "vip", "list": "extra"}  # the segment's users in the list
    assert await segments.audience(both) == ["u3"]
    assert await segments.audience({"segment": "vip", "exclude": {"segment": "bj"}}) == ["u2"]
    minus = {"segment": "bj", "exclude": {"list": "extra", "exclude": {"segment": "vip"}}}
    assert await segments.audience(minus) == ["u1", "u3"]  # Beijing minus (extra's non-VIPs: u4, u5)
    assert await segments.count_audience(minus) == 2
    assert await segments.audience({"segment": "bj", "exclude": {"list": "extra"}}) == ["u1"]

    for spec, field in [
        ({}, "audience"),
        ({"segment": "nope"}, "audience.segment"),
        ({"list": "nope"}, "audience.list"),
        ({"segment": "vip", "exclude": {"list": "nope"}}, "audience.exclude.list"),
        ({"segment": "vip", "exclude": {}}, "audience.exclude"),
        ({"segment": "vip", "exclude": {"exclude": {"list": "blocked"}}}, "audience.exclude"),
        (
            {"list": "blocked", "exclude": {"list": "blocked", "exclude": {"segment": 3}}},
            "audience.exclude.exclude.segment",
        ),
        ({"segment": "vip", "template": "x"}, "audience.template"),
        ("vip", "audience"),
    ]:
        with pytest.raises(errors.InvalidInput) as raised:
            await segments.count_audience(spec)
        assert raised.value.details == {"field": field}, spec
