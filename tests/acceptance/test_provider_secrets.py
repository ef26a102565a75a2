"""Provider credentials through the HTTP API: masked wherever they sit (secret fields, URL userinfo and query
values, header values, a request template's literals), kept when a GET answer is sent back, never following a
new destination, sealed at rest (the database file and rows hold none in clear), audited without their values,
and gone with a deleted account."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap, sealing
from clarion.channels import registry
from clarion.domain import errors
from clarion.store import tables as t
from tests.conftest import drain, put_template, put_user
from tests.integration.loopback import LoopbackServer, Reply

MASK = "********"
#: every secret the accounts below hold; none may be shown or stored in clear
SECRETS = (
    "url-user-7f3a",
    "pw-in-url-9c1e",
    "key-in-query-4b2d",
    "key-in-header-8e5f",
    "sig-in-header-2a6c",
    "acct-in-body-5d7b",
    "sig-in-body-3f9a",
    "whsec-signing-6c4e",
    "hook-header-tok-1b8d",
    "s3cret-smtp-7e2f",
)


def vendor_config(base: str = "https://sms.example.com") -> dict[str, Any]:
    scheme, _, host = base.partition("://")
    return {
        "url": f"{scheme}://url-user-7f3a:pw-in-url-9c1e@{host}/send?api_key=key-in-query-4b2d&region=eu",
        "headers": {"X-Api-Key": "key-in-header-8e5f", "X-Signature": "sig-in-header-2a6c"},
        "body": {
            "account": "acct-in-body-5d7b",
            "sign": "sig-in-body-3f9a",
            "to": "{phone}",
            "text": "【{sender}】{text}",
        },
        "sender": "Acme",
        "timeout": 5,
        "allow_private_networks": True,
    }


HOOKS = {"secret": "whsec-signing-6c4e", "headers": {"X-Token": "hook-header-tok-1b8d"}}
SMTP = {"host": "smtp.example.com", "username": "mailer", "password": "s3cret-smtp-7e2f", "sender": "no@x.io"}


async def put(api: httpx.AsyncClient, name: str, channel: str, kind: str, config: dict[str, Any]) -> httpx.Response:
    return await api.put(f"/v1/providers/{name}", json={"channel": channel, "kind": kind, "config": config})


async def put_all(api: httpx.AsyncClient) -> list[httpx.Response]:
    return [
        await put(api, "vendor", "sms", "sms_http", vendor_config()),
        await put(api, "hooks", "webhook", "webhook", HOOKS),
        await put(api, "mail", "email", "smtp", SMTP),
    ]


def assert_no_secret(text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    leaked = [s for s in SECRETS if s.encode() in data]
    assert leaked == [], f"in clear: {leaked}"


async def opened(clarion: bootstrap.Clarion, name: str) -> dict[str, Any]:
    async with clarion.db.read() as conn:
        stored = (await conn.execute(sa.select(t.providers.c.config).where(t.providers.c.name == name))).scalar_one()
    return registry.unseal(name, stored, clarion.providers.sealer)


async def test_every_place_a_secret_sits_is_masked_on_get(api: httpx.AsyncClient) -> None:
    for response in await put_all(api):
        assert response.status_code == 201, response.text
        assert_no_secret(response.text)
    shown = {name: (await api.get(f"/v1/providers/{name}")).json()["config"] for name in ("vendor", "hooks", "mail")}
    listed = await api.get("/v1/providers")
    assert_no_secret(listed.text)
    assert {p["name"]: p["config"] for p in listed.json()["providers"]} == shown
    vendor = shown["vendor"]
    assert vendor["url"] == f"https://{MASK}:{MASK}@sms.example.com/send?api_key={MASK}&region={MASK}"
    assert vendor["headers"] == {"X-Api-Key": MASK, "X-Signature": MASK}
    assert vendor["body"] == {"account": MASK, "sign": MASK, "to": "{phone}", "text": "【{sender}】{text}"}
    assert vendor["sender"] == "Acme"  # what is not a secret stays readable, so the account can be edited
    assert (shown["hooks"]["secret"], shown["hooks"]["headers"]) == (MASK, {"X-Token": MASK})
    assert (shown["mail"]["password"], shown["mail"]["username"]) == (MASK, "mailer")


async def test_a_get_answer_sent_back_keeps_every_secret_and_the_vendor_gets_them(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    async with LoopbackServer(default=Reply(200, {"message_id": "v-1"})) as server:
        assert (await put(api, "vendor", "sms", "sms_http", vendor_config(server.url))).status_code == 201
        shown = (await api.get("/v1/providers/vendor")).json()["config"]
        assert (await put(api, "vendor", "sms", "sms_http", shown)).status_code == 200
        edited = (await put(api, "vendor", "sms", "sms_http", {**shown, "sender": "Acme2"})).json()
        assert edited["config"]["sender"] == "Acme2"
        assert await opened(clarion, "vendor") == {**vendor_config(server.url), **_defaults(), "sender": "Acme2"}

        await put_user(api, "u1", addresses={"sms": "+8613800138000"})
        await put_template(api, "code", channels={"sms": {"text": "code 1234"}})
        sent = await api.post("/v1/messages", json={"template": "code", "to": "u1"})
        assert sent.status_code == 202, sent.text
        assert await drain(clarion) == 1

    [request] = server.requests
    assert request.query == {"api_key": "key-in-query-4b2d", "region": "eu"}
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"url-user-7f3a:pw-in-url-9c1e").decode()
    assert (request.headers["X-Api-Key"], request.headers["X-Signature"]) == (
        "key-in-header-8e5f",
        "sig-in-header-2a6c",
    )
    assert request.json() == {
        "account": "acct-in-body-5d7b",
        "sign": "sig-in-body-3f9a",
        "to": "+8613800138000",
        "text": "【Acme2】code 1234",
    }


def _defaults() -> dict[str, Any]:
    """The sms_http fields the vendor config above leaves to their defaults, as a save fills them in."""
    return {
        "method": "POST",
        "message_id_path": "message_id",
        "status_path": None,
        "success_values": ["ok", "OK", "success", 0, "0", True],
        "error_path": None,
        "transient_codes": [],
        "receipts": None,
        "receipt_secret": None,
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"headers": {"X-Api-Key": MASK}}, "config.headers.X-Api-Key"),
        ({"url": f"https://sms.example.com/send?api_key={MASK}"}, "config.url"),
        ({"url": f"https://{MASK}:{MASK}@sms.example.com/send"}, "config.url"),
        ({"body": {"to": "{phone}", "sign": MASK}}, "config.body.sign"),
    ],
)
async def test_a_masked_value_with_nothing_stored_is_422_naming_its_place(
    api: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    response = await put(api, "vendor", "sms", "sms_http", {**vendor_config(), **change})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert [d["field"] for d in error["details"]] == [field]
    assert (await api.get("/v1/providers/vendor")).status_code == 404


async def test_a_kept_secret_does_not_follow_a_new_destination(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await put_all(api)
    mail = (await api.get("/v1/providers/mail")).json()["config"]
    moved = await put(api, "mail", "email", "smtp", {**mail, "host": "evil.example.com"})
    assert moved.status_code == 422, moved.text
    assert moved.json()["error"]["details"][0]["field"] == "config.password"
    vendor = (await api.get("/v1/providers/vendor")).json()["config"]
    redirected = {**vendor, "url": vendor["url"].replace("sms.example.com", "evil.example.com")}
    refused = await put(api, "vendor", "sms", "sms_http", redirected)
    assert refused.status_code == 422, refused.text
    assert (await opened(clarion, "mail"))["host"] == "smtp.example.com"
    assert "sms.example.com" in (await opened(clarion, "vendor"))["url"]
    # the same move with the secret given again is the operator's to make
    given = await put(api, "mail", "email", "smtp", {**mail, "host": "evil.example.com", "password": "fresh"})
    assert given.status_code == 200
    assert (await opened(clarion, "mail"))["password"] == "fresh"


async def test_the_database_holds_no_secret_in_clear(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await put_all(api)
    for name in ("vendor", "hooks", "mail"):  # sent back as shown: the secrets are kept, and sealed again
        shown = (await api.get(f"/v1/providers/{name}")).json()
        assert (await put(api, name, shown["channel"], shown["kind"], shown["config"])).status_code == 200
    assert (await api.delete("/v1/providers/hooks")).status_code == 204
    assert (await opened(clarion, "mail"))["password"] == "s3cret-smtp-7e2f"  # still there for sending

    if clarion.db.is_sqlite:
        path = Path(sa.make_url(clarion.settings.database_url).database or "")
        files = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
        assert path in files
        for file in files:
            assert_no_secret(file.read_bytes())
    else:
        async with clarion.db.read() as conn:
            rows = (await conn.execute(sa.text("SELECT name, config::text FROM providers ORDER BY name"))).all()
            audit = (await conn.execute(sa.text("SELECT coalesce(detail::text, '') FROM audit_log"))).scalars().all()
        assert [r.name for r in rows] == ["mail", "vendor"]
        for row in rows:
            assert_no_secret(row.config)
            assert '"$sealed": "sealed:v1:' in row.config
        assert_no_secret(" ".join(audit))
    assert_no_secret((await api.get("/v1/audit", params={"limit": 1000})).text)


async def test_the_deleted_account_is_gone_and_its_audit_names_no_secret(api: httpx.AsyncClient) -> None:
    await put_all(api)
    shown = (await api.get("/v1/providers/mail")).json()["config"]
    assert (await put(api, "mail", "email", "smtp", {**shown, "password": "s3cret-smtp-7e2f-new"})).status_code == 200
    assert (await put(api, "mail", "email", "smtp", {**shown, "port": 2525})).status_code == 200
    assert (await put(api, "mail", "email", "smtp", {**shown, "host": "mx.example.com"})).status_code == 422
    assert (await api.delete("/v1/providers/mail")).status_code == 204
    assert (await api.get("/v1/providers/mail")).status_code == 404

    log = await api.get("/v1/audit", params={"subject": "provider:mail"})
    assert "s3cret-smtp-7e2f-new" not in log.text
    assert_no_secret(log.text)
    entries = list(reversed(log.json()["entries"]))
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("provider.create", "bootstrap"),
        ("provider.update", "bootstrap"),
        ("provider.update", "bootstrap"),
        ("provider.delete", "bootstrap"),
    ]  # one entry per change; the refused one wrote none
    create, password, port, delete = (e["detail"] for e in entries)
    assert create["changed"][:3] == ["kind", "channel", "enabled"]
    assert "config.password" in create["changed"]
    assert password["changed"] == ["config.password"]
    assert port["changed"] == ["config.port"]
    assert delete == {"kind": "smtp", "channel": "email"}


async def test_secrets_sealed_under_another_key_are_refused_clearly(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    from datetime import UTC, datetime

    other = registry.seal(
        "mail",
        "smtp",
        {**SMTP, "port": 25, "starttls": False, "use_tls": False, "timeout": 10},
        sealing.Sealer("another-key"),
    )
    now = datetime.now(UTC)

    async def job(conn: Any) -> None:
        await conn.execute(
            t.providers.insert().values(
                name="mail", channel="email", kind="smtp", config=other, enabled=True, created_at=now, updated_at=now
            )
        )

    await clarion.db.write(job)
    clarion.invalidate()
    shown = await api.get("/v1/providers/mail")  # reading needs no key: what is shown is stored masked
    assert shown.status_code == 200 and shown.json()["config"]["password"] == MASK
    with pytest.raises(errors.TransientSendError) as caught:
        await clarion.providers.get("mail")
    assert caught.value.code == "secrets_unreadable"
    assert "'mail'" in caught.value.message and "another secret key" in caught.value.message

    kept = await put(api, "mail", "email", "smtp", shown.json()["config"])
    assert kept.status_code == 409, kept.text
    assert kept.json()["error"]["code"] == "secrets_unreadable"
    assert kept.json()["error"]["details"]["field"] == "config"
    given = await put(api, "mail", "email", "smtp", {**shown.json()["config"], "password": "again"})
    assert given.status_code == 200, given.text
    assert (await opened(clarion, "mail"))["password"] == "again"
    assert (await clarion.providers.get("mail")).config.password == "again"  # type: ignore[attr-defined]


async def test_an_account_stored_before_sealing_is_masked_and_still_sends(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    config = {**SMTP, "port": 25, "starttls": False, "use_tls": False, "timeout": 10}

    async def job(conn: Any) -> None:
        await conn.execute(
            t.providers.insert().values(
                name="mail", channel="email", kind="smtp", config=config, enabled=True, created_at=now, updated_at=now
            )
        )

    await clarion.db.write(job)
    shown = await api.get("/v1/providers/mail")
    assert shown.json()["config"]["password"] == MASK
    assert (await clarion.providers.get("mail")).config.password == "s3cret-smtp-7e2f"  # type: ignore[attr-defined]


async def test_the_running_registry_opens_with_the_configured_secret_key(clarion: bootstrap.Clarion) -> None:
    assert clarion.providers.sealer is not None
    assert clarion.providers.sealer.key_id == sealing.Sealer("test-secret-key").key_id  # the suite's key
