"""Provider accounts through the HTTP API: validation, secrets never returned (wherever they sit) and sealed at
rest, reads and writes for ``admin`` only, every change audited, listing, deletion, routing."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.channels import registry
from clarion.store import tables as t
from tests.conftest import drain, put_template, put_user

SMTP = {
    "host": "smtp.example.com",
    "port": 587,
    "username": "mailer",
    "password": "s3cret!",
    "sender": "Shop <no@x.io>",
}


async def put_provider(api, name: str, **body: Any) -> Any:
    return await api.put(f"/v1/providers/{name}", json=body)


async def stored_config(clarion: bootstrap.Clarion, name: str) -> dict[str, Any]:
    async with clarion.db.read() as conn:
        return (await conn.execute(sa.select(t.providers.c.config).where(t.providers.c.name == name))).scalar_one()


async def opened_config(clarion: bootstrap.Clarion, name: str) -> dict[str, Any]:
    """The stored config as the provider is built from it: opened with the running Clarion's key."""
    return registry.unseal(name, await stored_config(clarion, name), clarion.providers.sealer)


async def test_smtp_password_is_stored_but_never_returned(api, clarion: bootstrap.Clarion) -> None:
    created = await put_provider(api, "mail", channel="email", kind="smtp", config=SMTP)
    assert created.status_code == 201, created.text
    assert "s3cret!" not in created.text
    provider = created.json()
    assert (provider["name"], provider["channel"], provider["kind"], provider["enabled"]) == (
        "mail",
        "email",
        "smtp",
        True,
    )
    assert provider["config"] == {
        "host": "smtp.example.com",
        "port": 587,
        "username": "mailer",
        "password": "********",
        "starttls": False,
        "use_tls": False,
        "sender": "Shop <no@x.io>",
        "timeout": 10,
        "bounce_token": None,  # no bounce endpoint until one is set
    }
    fetched = await api.get("/v1/providers/mail")
    assert fetched.status_code == 200
    assert fetched.json()["config"]["password"] == "********"
    assert "s3cret!" not in fetched.text
    listed = await api.get("/v1/providers")
    assert "s3cret!" not in listed.text
    assert [p["config"]["password"] for p in listed.json()["providers"]] == ["********"]
    assert "s3cret!" not in str(await stored_config(clarion, "mail"))  # sealed at rest
    assert (await opened_config(clarion, "mail"))["password"] == "s3cret!"  # kept for sending


async def test_put_again_updates_with_200(api) -> None:
    assert (await put_provider(api, "mail", channel="email", kind="smtp", config=SMTP)).status_code == 201
    updated = await put_provider(api, "mail", channel="email", kind="smtp", config={**SMTP, "port": 465}, enabled=False)
    assert updated.status_code == 200
    assert (updated.json()["config"]["port"], updated.json()["enabled"]) == (465, False)
    assert (await api.get("/v1/providers/mail")).json()["config"]["port"] == 465


async def test_provider_without_password_shows_null(api) -> None:
    config = {k: v for k, v in SMTP.items() if k != "password"}
    provider = (await put_provider(api, "mail", channel="email", kind="smtp", config=config)).json()
    assert provider["config"]["password"] is None


async def test_unknown_kind_is_422(api) -> None:
    response = await put_provider(api, "x", channel="email", kind="carrier-pigeon", config={})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["details"]["field"] == "kind"
    known = error["details"]["known"]
    assert known == sorted(known)
    assert {"file", "inbox", "sms_http", "smtp", "webhook", "aliyun_sms", "fcm", "apns", "wechat_oa"} <= set(known)
    assert (await api.get("/v1/providers/x")).status_code == 404


@pytest.mark.parametrize(("channel", "kind"), [("sms", "smtp"), ("push", "smtp"), ("email", "inbox")])
async def test_kind_that_cannot_serve_the_channel_is_422(api, channel: str, kind: str) -> None:
    response = await put_provider(api, "x", channel=channel, kind=kind, config=SMTP if kind == "smtp" else {})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["field"] in ("channel", "kind")
    assert (await api.get("/v1/providers/x")).status_code == 404


async def test_smtp_on_sms_names_the_supported_channels(api) -> None:
    response = await put_provider(api, "x", channel="sms", kind="smtp", config=SMTP)
    assert response.json()["error"]["details"] == {"field": "channel", "supported": ["email"]}


@pytest.mark.parametrize(
    ("config", "fields"),
    [
        ({**SMTP, "port": "not-a-port"}, ["config.port"]),
        ({**SMTP, "port": 70000}, ["config.port"]),
        ({**SMTP, "hots": "typo"}, ["config.hots"]),
        ({k: v for k, v in SMTP.items() if k != "host"}, ["config.host"]),
        ({**SMTP, "sender": "nobody"}, ["config.sender"]),
        ({**SMTP, "timeout": 0}, ["config.timeout"]),
    ],
)
async def test_bad_config_is_422_naming_config_field(api, config: dict[str, Any], fields: list[str]) -> None:
    response = await put_provider(api, "mail", channel="email", kind="smtp", config=config)
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == fields
    assert (await api.get("/v1/providers/mail")).status_code == 404


async def test_exclusive_tls_modes_are_refused(api) -> None:
    response = await put_provider(
        api, "mail", channel="email", kind="smtp", config={**SMTP, "starttls": True, "use_tls": True}
    )
    assert response.status_code == 422
    assert "exclusive" in response.json()["error"]["details"][0]["message"]


async def test_invalid_provider_body_is_422(api) -> None:
    assert (await put_provider(api, "x", channel="fax", kind="file", config={})).status_code == 422
    assert (await put_provider(api, "x", kind="file", config={})).status_code == 422
    assert (await put_provider(api, "x", channel="sms", kind="file", config={}, extra=1)).status_code == 422
    assert (await api.put("/v1/providers/bad name", json={"channel": "sms", "kind": "file"})).status_code == 422


async def test_list_is_sorted_by_name_and_delete_removes(api) -> None:
    assert (await put_provider(api, "b-mail", channel="email", kind="smtp", config=SMTP)).status_code == 201
    assert (
        await put_provider(api, "a-files", channel="sms", kind="file", config={"directory": "/tmp/x"})
    ).status_code == 201
    providers = (await api.get("/v1/providers")).json()["providers"]
    assert [(p["name"], p["channel"], p["kind"]) for p in providers] == [
        ("a-files", "sms", "file"),
        ("b-mail", "email", "smtp"),
    ]
    assert providers[0]["config"] == {"directory": "/tmp/x", "fsync": False}

    assert (await api.delete("/v1/providers/b-mail")).status_code == 204
    missing = await api.get("/v1/providers/b-mail")
    assert missing.status_code == 404
    assert missing.json()["error"]["details"] == {"kind": "provider", "key": "b-mail"}
    assert (await api.delete("/v1/providers/b-mail")).status_code == 404
    assert [p["name"] for p in (await api.get("/v1/providers")).json()["providers"]] == ["a-files"]


async def test_configured_account_routes_its_channel_and_delete_restores_default(
    api, clarion: bootstrap.Clarion, tmp_path
) -> None:
    await put_user(api, "u1", addresses={"sms": "+8613800138000"})
    await put_template(api, "t", channels={"sms": {"text": "hi {n}"}})
    directory = tmp_path / "vendor"
    assert (
        await put_provider(api, "vendor", channel="sms", kind="file", config={"directory": str(directory)})
    ).status_code == 201
    first = (await api.post("/v1/messages", json={"template": "t", "to": "u1", "data": {"n": 1}})).json()["messages"][0]
    assert await drain(clarion) == 1
    assert len((directory / "sms.jsonl").read_text().splitlines()) == 1
    detail = (await api.get(f"/v1/messages/{first['id']}")).json()
    assert detail["deliveries"][0]["provider"] == "vendor"

    assert (await api.delete("/v1/providers/vendor")).status_code == 204
    second = (await api.post("/v1/messages", json={"template": "t", "to": "u1", "data": {"n": 2}})).json()["messages"][
        0
    ]
    assert await drain(clarion) == 1
    detail = (await api.get(f"/v1/messages/{second['id']}")).json()
    assert detail["deliveries"][0]["provider"] == "file"


async def test_account_named_like_a_builtin_does_not_hijack_its_channel(api, clarion: bootstrap.Clarion) -> None:
    await put_user(api, "u1")
    await put_template(api, "t", channels={"inbox": {"title": "T", "body": "B"}})
    smtp = {"host": "127.0.0.1", "port": 9, "sender": "no@x.io", "timeout": 0.5}
    response = await put_provider(api, "inbox", channel="email", kind="smtp", config=smtp)
    if response.status_code in (409, 422):
        return  # refusing the reserved name is a fine answer
    await api.post("/v1/messages", json={"template": "t", "to": "u1"})
    await drain(clarion)
    assert (await api.get("/v1/users/u1/inbox/count")).json() == {"total": 1, "unread": 1}


async def test_putting_back_the_redacted_config_keeps_the_password(api, clarion: bootstrap.Clarion) -> None:
    assert (await put_provider(api, "mail", channel="email", kind="smtp", config=SMTP)).status_code == 201
    shown = (await api.get("/v1/providers/mail")).json()
    response = await put_provider(api, "mail", channel="email", kind="smtp", config={**shown["config"], "port": 2525})
    assert response.status_code == 200
    assert (await opened_config(clarion, "mail"))["password"] == "s3cret!"


@pytest.mark.parametrize("role", ["editor", "approver", "sender"])
async def test_reading_providers_needs_admin(api, clarion: bootstrap.Clarion, role: str) -> None:
    assert (await put_provider(api, "mail", channel="email", kind="smtp", config=SMTP)).status_code == 201
    key = f"clk_{role}_reads_providers_0000000000"
    await clarion.keys.create(role, (role,), key=key)
    headers = {"Authorization": f"Bearer {key}"}
    for path in ("/v1/providers", "/v1/providers/mail", "/v1/providers/nobody"):
        refused = await api.get(path, headers=headers)
        assert refused.status_code == 403, (path, refused.text)
        error = refused.json()["error"]
        assert (error["code"], error["details"]["needs"], error["details"]["roles"]) == ("forbidden", ["admin"], [role])
    assert (await api.get("/v1/providers")).status_code == 200  # the suite's key is admin
    assert (await api.get("/v1/providers/mail")).status_code == 200
