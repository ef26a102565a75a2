"""Routes through the HTTP API: saving, reading, listing and deleting them (``admin`` only, audited), refusing bad
ones by their field, and what they decide when deliveries are sent — the backlog included."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.store import tables as t
from tests.conftest import drain, put_template, put_user

CN, US = "+8613800138000", "+14155550100"


async def put_route(api, key: str, **body: Any) -> Any:
    return await api.put(f"/v1/routes/{key}", json=body)


async def file_account(api, name: str, tmp_path: Path, channel: str = "sms", **extra: Any) -> Path:
    directory = tmp_path / name
    body = {"channel": channel, "kind": "file", "config": {"directory": str(directory)}, **extra}
    response = await api.put(f"/v1/providers/{name}", json=body)
    assert response.status_code == 201, response.text
    return directory


def sent_through(directory: Path, channel: str = "sms") -> int:
    path = directory / f"{channel}.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def send(api, template: str, to: str | list[str], **data: Any) -> list[str]:
    response = await api.post("/v1/messages", json={"template": template, "to": to, "data": data})
    assert response.status_code in (200, 201, 202), response.text
    return [m["id"] for m in response.json()["messages"]]


async def delivery_of(api, message_id: str) -> dict[str, Any]:
    [delivery] = (await api.get(f"/v1/messages/{message_id}")).json()["deliveries"]
    return delivery


async def test_save_read_list_replace_delete_and_audit(api, clarion: bootstrap.Clarion, tmp_path: Path) -> None:
    for name in ("aliyun-a", "tencent-b", "twilio"):
        await file_account(api, name, tmp_path)
    body = {
        "channel": "sms",
        "match": {"category": "verification", "country_code": "+86"},
        "providers": [{"name": "aliyun-a", "weight": 70}, {"name": "tencent-b", "weight": 30}],
        "failover": ["twilio"],
    }
    created = await put_route(api, "codes-cn", **body)
    assert created.status_code == 201, created.text
    shown = created.json()
    assert {k: shown[k] for k in ("key", "channel", "match", "providers", "failover", "enabled")} == {
        "key": "codes-cn",
        **body,
        "enabled": True,
    }
    assert (await api.get("/v1/routes/codes-cn")).json() == shown
    replaced = await put_route(api, "codes-cn", **{**body, "providers": [{"name": "tencent-b", "weight": 1}]})
    assert replaced.status_code == 200
    assert replaced.json()["providers"] == [{"name": "tencent-b", "weight": 1}]
    assert (await put_route(api, "all-email", channel="email", providers=[{"name": "file"}])).status_code == 201
    listed = (await api.get("/v1/routes")).json()["routes"]
    assert [(r["key"], r["match"]) for r in listed] == [("all-email", {}), ("codes-cn", body["match"])]

    assert (await api.delete("/v1/routes/codes-cn")).status_code == 204
    assert (await api.get("/v1/routes/codes-cn")).status_code == 404
    assert (await api.delete("/v1/routes/codes-cn")).status_code == 404
    async with clarion.db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(t.audit_log.c.action, t.audit_log.c.subject)
                .where(t.audit_log.c.subject.like("route:%"))
                .order_by(t.audit_log.c.id)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("route.create", "route:codes-cn"),
        ("route.update", "route:codes-cn"),
        ("route.create", "route:all-email"),
        ("route.delete", "route:codes-cn"),
    ]


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"providers": [{"name": "nobody"}]}, "providers.0.name", "unknown_provider"),
        ({"providers": [{"name": "sms-a"}, {"name": "mail"}]}, "providers.1.name", "wrong_channel"),
        ({"providers": [{"name": "inbox"}]}, "providers.0.name", "wrong_channel"),  # a built-in of other channels
        ({"providers": [{"name": "sms-a", "weight": -1}]}, "providers.0.weight", "invalid_input"),
        ({"providers": [{"name": "sms-a", "weight": 0.5}]}, "providers.0.weight", "invalid_input"),
        ({"providers": []}, "providers", "invalid_input"),
        ({"providers": [{"name": "sms-a"}, {"name": "sms-a"}]}, "providers.1.name", "invalid_input"),
        ({"providers": [{"name": "sms-a"}], "failover": ["gone"]}, "failover.0", "unknown_provider"),
        ({"providers": [{"name": "sms-a"}], "failover": ["mail"]}, "failover.0", "wrong_channel"),
        ({"providers": [{"name": "sms-a"}], "match": {"country_code": "+8613"}}, "match.country_code", "invalid_input"),
        ({"providers": [{"name": "sms-a"}], "match": {"category": "spam"}}, "match.category", "invalid_input"),
        ({"providers": [{"name": "sms-a"}], "match": {"colour": "red"}}, "match.colour", "invalid_input"),
        (
            {"channel": "email", "providers": [{"name": "mail"}], "match": {"signature": "Acme"}},
            "match.signature",
            None,
        ),
        (
            {"channel": "email", "providers": [{"name": "mail"}], "match": {"country_code": "+86"}},
            "match.country_code",
            None,
        ),
    ],
)
async def test_bad_routes_are_refused_by_their_field(
    api, clarion: bootstrap.Clarion, tmp_path: Path, body: dict[str, Any], field: str, code: str | None
) -> None:
    await file_account(api, "sms-a", tmp_path)
    await file_account(api, "mail", tmp_path, channel="email")
    refused = await put_route(api, "r", **{"channel": "sms", **body})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["details"][0]["field"] == field, error
    if code is not None:
        assert error["code"] == code
    assert (await api.get("/v1/routes/r")).status_code == 404


async def test_a_tie_is_refused_naming_the_other_route(api, clarion: bootstrap.Clarion, tmp_path: Path) -> None:
    await file_account(api, "sms-a", tmp_path)
    providers = [{"name": "sms-a"}]
    assert (
        await put_route(api, "codes", channel="sms", match={"category": "verification"}, providers=providers)
    ).status_code == 201
    # a +86 verification SMS would match both, and neither is more specific
    refused = await put_route(api, "china", channel="sms", match={"country_code": "+86"}, providers=providers)
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert (error["code"], error["details"][0]["field"], error["details"][0]["route"]) == (
        "route_tie",
        "match",
        "codes",
    )
    assert "codes" in error["message"]
    # more specific, another value, another channel, or disabled: no tie
    both = {"category": "verification", "country_code": "+86"}
    assert (await put_route(api, "codes-cn", channel="sms", match=both, providers=providers)).status_code == 201
    assert (
        await put_route(api, "promo", channel="sms", match={"category": "marketing"}, providers=providers)
    ).status_code == 201
    assert (
        await put_route(api, "china", channel="sms", match={"country_code": "+86"}, providers=providers, enabled=False)
    ).status_code == 201
    # enabling it later is judged again
    assert (
        await put_route(api, "china", channel="sms", match={"country_code": "+86"}, providers=providers)
    ).status_code == 422
    # replacing a route does not tie with its own earlier self
    assert (
        await put_route(api, "codes", channel="sms", match={"category": "verification"}, providers=providers)
    ).status_code == 200


@pytest.mark.parametrize("role", ["editor", "approver", "sender"])
async def test_routes_need_admin(api, clarion: bootstrap.Clarion, tmp_path: Path, role: str) -> None:
    await file_account(api, "sms-a", tmp_path)
    assert (await put_route(api, "r", channel="sms", providers=[{"name": "sms-a"}])).status_code == 201
    key = f"clk_{role}_reads_routes_000000000000"
    await clarion.keys.create(role, (role,), key=key)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"channel": "sms", "providers": [{"name": "sms-a"}]}
    for method, path in (
        ("GET", "/v1/routes"),
        ("GET", "/v1/routes/r"),
        ("PUT", "/v1/routes/x"),
        ("DELETE", "/v1/routes/r"),
    ):
        refused = await api.request(method, path, headers=headers, json=body if method == "PUT" else None)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["error"]["code"] == "forbidden"
    assert [r["key"] for r in (await api.get("/v1/routes")).json()["routes"]] == ["r"]


async def test_most_specific_route_wins(api, clarion: bootstrap.Clarion, tmp_path: Path) -> None:
    dirs = {n: await file_account(api, n, tmp_path) for n in ("a-test", "cn-vendor", "world-1", "world-2")}
    china = {"channel": "sms", "match": {"country_code": "+86"}, "providers": [{"name": "cn-vendor"}]}
    assert (await put_route(api, "china", **china)).status_code == 201
    world = [{"name": "world-1", "weight": 1}, {"name": "world-2", "weight": 1}]
    assert (await put_route(api, "rest", channel="sms", providers=world)).status_code == 201  # matches anything
    clarion.providers.rand.seed(1)
    users = [f"cn{i}" for i in range(10)] + [f"us{i}" for i in range(30)]
    for user in users:
        await put_user(api, user, addresses={"sms": CN if user.startswith("cn") else US})
    await put_template(api, "note", channels={"sms": {"text": "hi {n}"}})
    await send(api, "note", users, n=1)
    assert await drain(clarion) == 40
    assert (sent_through(dirs["cn-vendor"]), sent_through(dirs["a-test"])) == (10, 0)
    assert sent_through(dirs["world-1"]) + sent_through(dirs["world-2"]) == 30
    assert sent_through(dirs["world-1"]) > 0 and sent_through(dirs["world-2"]) > 0


async def test_without_a_route_the_enabled_accounts_share_equally(
    api, clarion: bootstrap.Clarion, tmp_path: Path
) -> None:
    dirs = {n: await file_account(api, n, tmp_path) for n in ("a-test", "vendor-1", "vendor-2")}
    await file_account(api, "off", tmp_path, enabled=False)
    clarion.providers.rand.seed(2)
    users = [f"u{i}" for i in range(60)]
    for user in users:
        await put_user(api, user, addresses={"sms": US})
    await put_template(api, "note", channels={"sms": {"text": "hi {n}"}})
    await send(api, "note", users, n=1)
    assert await drain(clarion) == 60
    counts = {n: sent_through(d) for n, d in dirs.items()}
    assert sum(counts.values()) == 60
    # adding "a-test" does not silently take all of the channel's traffic because its name sorts first
    assert all(5 <= c <= 35 for c in counts.values()), counts
    assert sent_through(tmp_path / "off") == 0


async def test_the_provider_is_chosen_when_sent_and_skips_what_cannot_send(
    api, clarion: bootstrap.Clarion, tmp_path: Path
) -> None:
    primary = await file_account(api, "primary", tmp_path)
    spare = await file_account(api, "spare", tmp_path)
    await put_user(api, "u1", addresses={"sms": CN})
    await put_template(api, "code", category="verification", channels={"sms": {"text": "code {n}"}})
    [queued] = await send(api, "code", "u1", n=1)
    assert (await delivery_of(api, queued))["provider"] is None  # not chosen yet
    # a route saved after the message was queued applies to it; its disabled provider is skipped for the failover
    body = {
        "channel": "sms",
        "match": {"category": "verification"},
        "providers": [{"name": "primary"}],
        "failover": ["spare"],
    }
    assert (await put_route(api, "codes", **body)).status_code == 201
    assert (
        await api.put(
            "/v1/providers/primary",
            json={"channel": "sms", "kind": "file", "config": {"directory": str(primary)}, "enabled": False},
        )
    ).status_code == 200
    assert await drain(clarion) == 1
    assert (sent_through(primary), sent_through(spare)) == (0, 1)
    delivery = await delivery_of(api, queued)
    assert (delivery["status"], delivery["provider"]) == ("sent", "spare")
    sent = delivery["timeline"][-1]
    assert sent["status"] == "sent"
    assert sent["detail"] == {
        "provider": "spare",
        "route": "codes",
        "failover": True,
        "skipped": {"primary": "disabled"},
    }


async def test_a_delivery_waits_while_no_provider_of_its_route_can_send(
    api, clarion: bootstrap.Clarion, tmp_path: Path
) -> None:
    only = await file_account(api, "only", tmp_path)
    await put_user(api, "u1", addresses={"sms": CN})
    await put_template(api, "t", channels={"sms": {"text": "hello"}})
    assert (await put_route(api, "all-sms", channel="sms", providers=[{"name": "only"}])).status_code == 201
    disabled = {"channel": "sms", "kind": "file", "config": {"directory": str(only)}, "enabled": False}
    assert (await api.put("/v1/providers/only", json=disabled)).status_code == 200
    [message_id] = await send(api, "t", "u1")
    assert await drain(clarion) == 1
    delivery = await delivery_of(api, message_id)
    assert delivery["status"] == "queued"  # waiting, not failed
    assert delivery["attempts"] == 0  # and waiting spends none of the retries it will need
    waited = delivery["timeline"][-1]
    assert waited["status"] == "queued"
    assert waited["reason"].startswith("waiting 10s for a provider: no provider of route 'all-sms' can send")
    assert waited["detail"]["skipped"] == {"only": "disabled"}

    assert (await api.put("/v1/providers/only", json={**disabled, "enabled": True})).status_code == 200
    await _due_now(clarion)
    assert await drain(clarion) == 1
    sent = await delivery_of(api, message_id)
    assert (sent["status"], sent["attempts"]) == ("sent", 1)
    assert sent_through(only) == 1


async def _due_now(clarion: bootstrap.Clarion) -> None:
    """Bring every waiting delivery's next try to now, as if its wait had passed."""

    async def job(conn: Any) -> None:
        await conn.execute(t.deliveries.update().values(run_at=datetime.now(UTC)))

    await clarion.db.write(job)
