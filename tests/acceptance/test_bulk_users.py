"""User data in bulk: ``POST /v1/users:batch``, tags on many users, ``POST /v1/track``, ``clarion users import``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from clarion import bootstrap, cli
from clarion.settings import Settings
from clarion.store import tables as t
from tests.conftest import put_template, put_user

BAD_PHONE = "+86123"


async def batch(api, items: Any, *, mode: str | None = None, lines: bool = False) -> Any:
    params = {"mode": mode} if mode else None
    if lines:
        body = b"\n".join(orjson.dumps(item) if not isinstance(item, bytes) else item for item in items)
        return await api.post(
            "/v1/users:batch", content=body, params=params, headers={"Content-Type": "application/x-ndjson"}
        )
    return await api.post("/v1/users:batch", json=items, params=params)


async def user(api, user_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/users/{user_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_batch_array_creates_new_users_and_updates_existing_ones(api) -> None:
    await put_user(api, "old", attributes={"name": "Old"})
    response = await batch(
        api,
        [
            {
                "user_id": "a",
                "attributes": {"name": "A"},
                "tags": ["vip", "vip", "cn"],
                "addresses": {"sms": "+86 138 0013 8000"},
            },
            {"user_id": "b", "timezone": "Asia/Shanghai", "locale": "zh-CN", "addresses": {"email": "b@example.com"}},
            {"user_id": "old", "attributes": {"level": 2}},
        ],
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 2, "updated": 1, "failed": []}
    a = await user(api, "a")
    assert (a["attributes"], a["tags"], a["addresses"]) == ({"name": "A"}, ["vip", "cn"], {"sms": "+8613800138000"})
    b = await user(api, "b")
    assert (b["timezone"], b["locale"], b["addresses"]) == ("Asia/Shanghai", "zh-CN", {"email": "b@example.com"})
    assert (await user(api, "old"))["attributes"] == {"name": "Old", "level": 2}


async def test_batch_as_users_object_and_as_json_lines_with_line_numbers(api) -> None:
    wrapped = await api.post("/v1/users:batch", json={"users": [{"user_id": "w1"}]})
    assert wrapped.json() == {"created": 1, "updated": 0, "failed": []}

    response = await batch(
        api,
        [{"user_id": "j1", "tags": ["x"]}, b"", b"{not json", {"user_id": "j2", "attributes": {"n": 1}}],
        lines=True,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["created"], answer["updated"]) == (2, 0)
    [bad] = answer["failed"]
    assert (bad["index"], bad["line"], bad["user_id"]) == (1, 3, None)
    assert bad["error"].startswith("malformed JSON")
    assert (await user(api, "j1"))["tags"] == ["x"]
    assert (await user(api, "j2"))["attributes"] == {"n": 1}


STORED = {
    "attributes": {"name": "Li", "city": "Beijing", "level": 1},
    "tags": ["old"],
    "timezone": "Asia/Shanghai",
    "locale": "zh-CN",
    "addresses": {"email": "li@example.com", "sms": "+8613800138000"},
}
CHANGE = {"user_id": "li", "attributes": {"level": 2, "city": None}, "tags": ["new"], "addresses": {"sms": None}}


async def test_merge_changes_only_the_fields_given_and_null_removes_a_key(api) -> None:
    await put_user(api, "li", **STORED)
    await api.put("/v1/users/li/preferences", json={"channels": {"sms": False}})
    response = await batch(api, [CHANGE])  # merge is the default
    assert response.json() == {"created": 0, "updated": 1, "failed": []}
    got = await user(api, "li")
    assert got["attributes"] == {"name": "Li", "level": 2}
    assert got["tags"] == ["new"]
    assert got["addresses"] == {"email": "li@example.com"}
    assert (got["timezone"], got["locale"]) == ("Asia/Shanghai", "zh-CN")
    assert got["preferences"]["channels"] == {"sms": False}


async def test_replace_makes_the_profile_what_is_given_like_put(api) -> None:
    await put_user(api, "li", **STORED)
    await api.put("/v1/users/li/preferences", json={"channels": {"sms": False}})
    response = await batch(api, [CHANGE], mode="replace")
    assert response.json() == {"created": 0, "updated": 1, "failed": []}
    got = await user(api, "li")
    assert got["attributes"] == {"level": 2, "city": None}
    assert got["tags"] == ["new"]
    assert got["addresses"] == {}
    assert (got["timezone"], got["locale"]) == (None, None)
    assert got["preferences"]["channels"] == {"sms": False}  # kept, as PUT keeps them


async def test_a_user_given_twice_gets_both_changes_in_order(api) -> None:
    response = await batch(
        api, [{"user_id": "d", "attributes": {"a": 1}}, {"user_id": "d", "attributes": {"b": 2}, "tags": ["t"]}]
    )
    assert response.json() == {"created": 1, "updated": 0, "failed": []}
    got = await user(api, "d")
    assert (got["attributes"], got["tags"]) == ({"a": 1, "b": 2}, ["t"])


async def test_invalid_items_are_reported_by_index_with_puts_errors_and_the_others_written(api) -> None:
    put = await api.put("/v1/users/p", json={"addresses": {"sms": BAD_PHONE}})
    assert put.status_code == 422
    response = await batch(
        api,
        [
            {"user_id": "ok1"},
            {"user_id": "bad", "addresses": {"sms": BAD_PHONE}},
            {"user_id": "no spaces allowed"},
            "not an object",
            {"user_id": "extra", "nickname": "x"},
            {"user_id": "ok2", "timezone": "Asia/Shanghai"},
        ],
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["created"], answer["updated"]) == (2, 0)
    failed = {f["index"]: f for f in answer["failed"]}
    assert sorted(failed) == [1, 2, 3, 4]
    assert failed[1]["user_id"] == "bad"
    assert failed[1]["details"] == put.json()["error"]["details"]  # the same reasons PUT gives
    assert failed[1]["error"] == put.json()["error"]["message"]
    assert failed[2]["error"].startswith("user_id:")
    assert failed[4]["error"].startswith("nickname:")
    assert (await api.get("/v1/users/bad")).status_code == 404
    assert (await user(api, "ok2"))["timezone"] == "Asia/Shanghai"


async def test_over_the_limit_is_refused_naming_it_and_nothing_is_written(api) -> None:
    items = [{"user_id": f"u{i}"} for i in range(10_001)]
    for lines in (False, True):
        response = await batch(api, items, lines=lines)
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["details"] == {"limit": 10_000, "count": 10_001}
        assert "10000" in error["message"]
    assert (await api.get("/v1/users/u0")).status_code == 404


async def test_ten_thousand_users_in_one_call(api) -> None:
    items = [{"user_id": f"u{i}", "tags": ["t"]} for i in range(10_000)]
    response = await batch(api, items)
    assert response.json() == {"created": 10_000, "updated": 0, "failed": []}
    again = await batch(api, items)
    assert again.json() == {"created": 0, "updated": 10_000, "failed": []}


async def test_bad_bodies_are_refused(api) -> None:
    assert (
        await api.post("/v1/users:batch", content=b"[", headers={"Content-Type": "application/json"})
    ).status_code == 422
    assert (await api.post("/v1/users:batch", json={"user_id": "x"})).status_code == 422
    assert (await api.post("/v1/users:batch", json={"users": [], "mode": "replace"})).status_code == 422
    wrong = await api.post("/v1/users:batch", content=b"user_id\nx\n", headers={"Content-Type": "text/csv"})
    assert wrong.status_code == 415
    assert (await batch(api, [], mode="upsert")).status_code == 422


async def test_tags_added_and_removed_in_bulk_with_unknown_ids_reported(api) -> None:
    await put_user(api, "a", tags=["x"])
    await put_user(api, "b", tags=["x", "vip:gold"])
    await put_user(api, "c")
    added = await api.post("/v1/tags/vip:gold:add", json={"user_ids": ["a", "b", "ghost", "a"]})
    assert added.status_code == 200, added.text
    assert added.json() == {"tag": "vip:gold", "changed": 1, "unchanged": 1, "unknown": ["ghost"]}
    assert (await user(api, "a"))["tags"] == ["x", "vip:gold"]

    removed = await api.post("/v1/tags/x:remove", json={"user_ids": ["a", "b", "c", "nobody"]})
    assert removed.json() == {"tag": "x", "changed": 2, "unchanged": 1, "unknown": ["nobody"]}
    assert [(await user(api, u))["tags"] for u in ("a", "b", "c")] == [["vip:gold"], ["vip:gold"], []]

    too_many = await api.post("/v1/tags/x:add", json={"user_ids": [f"u{i}" for i in range(10_001)]})
    assert too_many.status_code == 422
    assert "10000" in too_many.text


async def events_of(clarion: bootstrap.Clarion) -> list[tuple[str, str, Any, Any]]:
    async with clarion.db.read() as conn:
        rows = await conn.execute(sa.select(t.user_events).order_by(t.user_events.c.id))
        return [(r.user_id, r.event, r.at, r.properties) for r in rows]


async def test_track_records_events_for_segments_and_reports_unknown_users(api, clarion) -> None:
    await put_user(api, "li")
    one = await api.post("/v1/track", json={"user_id": "li", "event": "app.open"})
    assert one.status_code == 200, one.text
    assert one.json() == {"recorded": 1, "converted": 0, "failed": [], "unknown_users": [], "triggered": []}
    many = await api.post(
        "/v1/track",
        json={
            "events": [
                {
                    "user_id": "li",
                    "event": "order.paid",
                    "at": "2026-01-02T08:00:00+08:00",
                    "properties": {"amount": 5},
                },
                {"user_id": "later", "event": "app.open", "at": "2026-01-02T00:00:00Z"},
                {"user_id": "li", "event": "order.paid", "at": "2026-01-02T08:00:00"},
                {"user_id": "li", "event": "x", "properties": {"blob": "y" * 9000}},
            ]
        },
    )
    answer = many.json()
    assert (answer["recorded"], answer["unknown_users"]) == (2, ["later"])
    assert [(f["index"], f["error"].split(":")[0]) for f in answer["failed"]] == [(2, "at"), (3, "properties")]
    stored = await events_of(clarion)
    assert [(u, e, p) for u, e, _, p in stored] == [
        ("li", "app.open", None),
        ("li", "order.paid", {"amount": 5}),
        ("later", "app.open", None),
    ]
    assert stored[1][2].isoformat() == "2026-01-02T00:00:00+00:00"


async def test_track_with_trigger_fires_the_rules_and_without_it_does_not(api, clarion) -> None:
    await put_user(api, "li", attributes={"name": "Li"})
    await put_template(api, "thanks", channels={"inbox": {"title": "Thanks", "body": "{data.amount}"}})
    rule = await api.put("/v1/rules/thanks", json={"event": "order.paid", "template": "thanks"})
    assert rule.status_code == 201, rule.text

    quiet = await api.post("/v1/track", json={"user_id": "li", "event": "order.paid", "properties": {"amount": 1}})
    assert quiet.json()["triggered"] == []
    loud = await api.post(
        "/v1/track",
        json={
            "trigger": True,
            "events": [
                {"user_id": "li", "event": "order.paid", "properties": {"amount": 7}},
                {"user_id": "li", "event": "order.paid", "properties": {"amount": 8}, "trigger": False},
            ],
        },
    )
    answer = loud.json()
    assert answer["recorded"] == 2
    [fired] = answer["triggered"]
    assert fired["index"] == 0
    [message] = fired["messages"]
    assert message["template"] == "thanks"
    record = (await api.get("/v1/users/li/messages")).json()
    assert [m["id"] for m in record["messages"]] == [message["id"]]
    assert len(await events_of(clarion)) == 3


async def test_track_over_the_limit_is_refused(api, clarion) -> None:
    events = [{"user_id": "u", "event": "e"}] * 10_001
    response = await api.post("/v1/track", json={"events": events})
    assert response.status_code == 413
    assert response.json()["error"]["details"]["limit"] == 10_000
    assert await events_of(clarion) == []


async def test_the_segment_index_hears_of_every_committed_change(api, clarion, monkeypatch) -> None:
    await put_user(api, "old")
    heard: list[Any] = []

    async def users_changed(user_ids: Any) -> None:
        heard.append(sorted(user_ids))

    async def events_tracked() -> None:
        heard.append("events")

    monkeypatch.setattr(clarion.segments, "users_changed", users_changed)
    monkeypatch.setattr(clarion.segments, "events_tracked", events_tracked)
    await batch(api, [{"user_id": "new"}, {"user_id": "old", "tags": ["t"]}, {"user_id": "bad", "locale": "?"}])
    await api.post("/v1/tags/t:add", json={"user_ids": ["new", "old", "ghost"]})
    await api.post("/v1/tags/t:remove", json={"user_ids": ["ghost"]})  # nothing changed: nothing to hear
    await api.post("/v1/track", json={"user_id": "new", "event": "app.open"})
    assert heard == [["new", "old"], ["new"], "events"]


# -- clarion users import ---------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The CLI's environment: the test database (SQLite or PostgreSQL)."""
    monkeypatch.setenv("CLARION_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CLARION_DATA_DIR", settings.data_dir)
    monkeypatch.setenv("CLARION_OUTBOX_DIR", settings.outbox_dir)
    monkeypatch.setenv("CLARION_SECRET_KEY", "cli-secret")
    return settings


def stored_users(settings: Settings) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        services = bootstrap.build(settings)
        try:
            async with services.db.read() as conn:
                return {r.user_id: r for r in await conn.execute(sa.select(t.users))}
        finally:
            await services.close()

    return asyncio.run(read())


CSV = """user_id,email,phone,timezone,tags,city,zip,age:int,vip:bool
u1,u1@example.com,+8613800138000,Asia/Shanghai,a|b,Beijing,01234,30,yes
u2,,,,c;d,Shanghai,,,
u3,u3@example.com,+86123,,,,,,
u4,,,,,,,thirty,
u5,"five@example.com",,,,"Hang
zhou",,41,no
"""


def test_import_csv_with_a_bad_row_reported_by_line(env: Settings, tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text(CSV)
    result = runner.invoke(cli.app, ["users", "import", str(path), "--batch", "2"])
    assert result.exit_code == 1, result.output
    assert "line 4: addresses.sms: Value error, not a valid phone number" in result.output
    assert "line 5: age: not int: 'thirty'\n" in result.output
    assert "5 rows: 3 created, 0 updated, 2 failed" in result.output
    users = stored_users(env)
    assert sorted(users) == ["u1", "u2", "u5"]
    u1 = users["u1"]
    assert u1.attributes == {"city": "Beijing", "zip": "01234", "age": 30, "vip": True}
    assert u1.addresses == {"email": "u1@example.com", "sms": "+8613800138000"}
    assert (u1.tags, u1.timezone) == (["a", "b"], "Asia/Shanghai")
    assert (users["u2"].attributes, users["u2"].tags, users["u2"].addresses) == ({"city": "Shanghai"}, ["c", "d"], {})
    assert users["u5"].attributes == {"city": "Hang\nzhou", "age": 41, "vip": False}


def test_import_merges_by_default_and_replaces_on_request(env: Settings, tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("user_id,city,tags\nu1,Beijing,a\n")
    assert runner.invoke(cli.app, ["users", "import", str(path)]).exit_code == 0
    path.write_text("user_id,level:int\nu1,2\n")
    merged = runner.invoke(cli.app, ["users", "import", str(path)])
    assert "1 rows: 0 created, 1 updated, 0 failed" in merged.output
    u1 = stored_users(env)["u1"]
    assert (u1.attributes, u1.tags) == ({"city": "Beijing", "level": 2}, ["a"])
    assert runner.invoke(cli.app, ["users", "import", str(path), "--mode", "replace"]).exit_code == 0
    u1 = stored_users(env)["u1"]
    assert (u1.attributes, u1.tags) == ({"level": 2}, [])


def test_import_jsonl_streams_every_batch_and_reports_bad_lines(env: Settings, tmp_path: Path) -> None:
    path = tmp_path / "users.jsonl"
    with path.open("wb") as f:
        for i in range(25):
            f.write(orjson.dumps({"user_id": f"j{i:02d}", "attributes": {"i": i}, "tags": ["bulk"]}) + b"\n")
        f.write(b"\n{broken\n")
        f.write(orjson.dumps({"user_id": "bad", "timezone": "Mars/Olympus"}) + b"\n")
    result = runner.invoke(cli.app, ["users", "import", str(path), "--batch", "10"])
    assert result.exit_code == 1, result.output
    assert "line 27: malformed JSON" in result.output
    assert "line 28: timezone: Value error, unknown IANA time zone 'Mars/Olympus'" in result.output
    assert "27 rows: 25 created, 0 updated, 2 failed" in result.output
    users = stored_users(env)
    assert len(users) == 25 and users["j24"].attributes == {"i": 24}


def test_import_csv_without_user_id_column_is_a_usage_error(env: Settings, tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("id,email\n1,a@example.com\n")
    result = runner.invoke(cli.app, ["users", "import", str(path)])
    assert result.exit_code == 2
    assert "user_id" in result.output
