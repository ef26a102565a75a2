"""Which role may write what, through the HTTP API: every write endpoint outside templates, review, sends, keys
and campaigns refuses a key without the role it needs — 403 ``forbidden`` naming the roles, with nothing written —
and accepts one with it. Provider accounts and policy configuration are ``admin``'s; user data (profiles,
preferences, bulk users, tags, tracked events, new suppressions, inbox reads) is the business systems'
(``sender``, and ``admin``); segments and ID lists are operators' content (``editor``, and ``admin``). Reading,
and the POSTs that only compute an answer, need any valid key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.types import Message, Scope

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.store import tables as t
from tests.conftest import API_KEY, drain, put_template, put_user

ED_KEY = "clk_ed_the_editor_0000000000000"
ANA_KEY = "clk_ana_the_approver_000000000000"
SAM_KEY = "clk_sam_the_sender_00000000000000"
KEYS = {"admin": API_KEY, "editor": ED_KEY, "approver": ANA_KEY, "sender": SAM_KEY}
ADMIN = ("admin",)
USER_DATA = ("admin", "sender")
EDIT = ("admin", "editor")
SMTP = {"host": "smtp.example.com", "port": 587, "username": "mailer", "sender": "Shop <no@x.io>"}


def as_role(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


@pytest.fixture
async def world(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> dict[str, str]:
    """One of everything the write endpoints change, made with the suite's (``admin``) key, and the keys of Ed
    (``editor``), Ana (``approver``) and Sam (``sender``, a business system)."""
    for role in ("editor", "approver", "sender"):
        await clarion.keys.create(role, (role,), key=KEYS[role])
    await put_user(api, "u1", attributes={"name": "Old"}, tags=["old"], addresses={"sms": "+8613800138000"})
    await put_template(api, "note", channels={"inbox": {"title": "Note {data.n}", "body": "Body"}})
    messages = []
    for n in range(2):  # two items, the same content would be deduplicated
        sent = await api.post("/v1/messages", json={"template": "note", "to": "u1", "data": {"n": n}})
        assert sent.status_code == 202, sent.text
        messages.append(sent.json()["messages"][0]["id"])
    assert await drain(clarion) == 2
    for method, path, body in (
        ("PUT", "/v1/providers/mail", {"channel": "email", "kind": "smtp", "config": {**SMTP, "password": "old"}}),
        ("PUT", "/v1/policies/caps/daily", {"limit": 5, "window": {"unit": "day"}}),
        ("PUT", "/v1/keyword-lists/banned", {"action": "block", "words": ["zzyzx"]}),
        ("PUT", "/v1/segments/vips", {"name": "VIPs", "conditions": {"tag": "old"}}),
    ):
        made = await api.request(method, path, json=body)
        assert made.status_code == 201, made.text
    listed = await api.post("/v1/lists", params={"key": "winners"}, content=b"u1\nu2\n")
    assert listed.status_code == 201, listed.text
    suppressed = await api.post("/v1/suppressions", json={"user_id": "u1", "channel": "email"})
    assert suppressed.status_code == 201, suppressed.text
    return {"suppression": suppressed.json()["id"], "message": messages[0]}


# -- what each endpoint would change, read back --------------------------------------------------------------

Snapshot = Callable[[httpx.AsyncClient, bootstrap.Clarion], Awaitable[Any]]


def got(*paths: str) -> Snapshot:
    """Status and body of GETs with the suite's key."""

    async def read(api: httpx.AsyncClient, _: bootstrap.Clarion) -> Any:
        return [(r.status_code, r.json()) for r in [await api.get(path) for path in paths]]

    return read


async def provider_row(_: httpx.AsyncClient, clarion: bootstrap.Clarion) -> Any:
    """The stored account, secret included (the API masks it)."""
    async with clarion.db.read() as conn:
        row = (await conn.execute(sa.select(t.providers).where(t.providers.c.name == "mail"))).one_or_none()
    return row._asdict() if row is not None else None


async def tracked(_: httpx.AsyncClient, clarion: bootstrap.Clarion) -> Any:
    async with clarion.db.read() as conn:
        return (await conn.execute(sa.select(t.user_events.c.user_id, t.user_events.c.event))).all()


async def row_counts(clarion: bootstrap.Clarion) -> dict[str, int]:
    async with clarion.db.read() as conn:
        return {
            table.name: (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            for table in t.metadata.sorted_tables
        }


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # may name {suppression} and {message}, the world's
    allowed: tuple[str, ...]
    state: Snapshot
    json: Any = None
    content: bytes | None = None


USER = got("/v1/users/u1")
INBOX = got("/v1/users/u1/inbox/count", "/v1/users/u1/inbox")
CASES = {
    # admin: provider accounts and policy configuration
    "put provider": Case(
        "PUT",
        "/v1/providers/mail",
        ADMIN,
        provider_row,
        {"channel": "email", "kind": "smtp", "config": {**SMTP, "password": "new", "host": "evil.example.com"}},
    ),
    "delete provider": Case("DELETE", "/v1/providers/mail", ADMIN, provider_row),
    "put policy settings": Case(
        "PUT", "/v1/policies/settings", ADMIN, got("/v1/policies/settings"), {"dedup_seconds": 1}
    ),
    "put cap": Case(
        "PUT",
        "/v1/policies/caps/daily",
        ADMIN,
        got("/v1/policies/caps/daily"),
        {"limit": 500, "window": {"unit": "day"}},
    ),
    "delete cap": Case("DELETE", "/v1/policies/caps/daily", ADMIN, got("/v1/policies/caps/daily")),
    "put keyword list": Case(
        "PUT", "/v1/keyword-lists/banned", ADMIN, got("/v1/keyword-lists/banned"), {"action": "mask", "words": ["x"]}
    ),
    "delete keyword list": Case("DELETE", "/v1/keyword-lists/banned", ADMIN, got("/v1/keyword-lists/banned")),
    "delete suppression": Case("DELETE", "/v1/suppressions/{suppression}", ADMIN, got("/v1/suppressions")),
    # sender (and admin): user data
    "put user": Case("PUT", "/v1/users/u1", USER_DATA, USER, {"attributes": {"name": "New"}}),
    "delete user": Case("DELETE", "/v1/users/u1", USER_DATA, USER),
    "put preferences": Case(
        "PUT", "/v1/users/u1/preferences", USER_DATA, got("/v1/users/u1/preferences"), {"channels": {"sms": False}}
    ),
    "users batch": Case(
        "POST",
        "/v1/users:batch",
        USER_DATA,
        got("/v1/users/u1", "/v1/users/u9"),
        [{"user_id": "u1", "attributes": {"name": "New"}}, {"user_id": "u9"}],
    ),
    "tag add": Case("POST", "/v1/tags/vip:add", USER_DATA, USER, {"user_ids": ["u1"]}),
    "tag remove": Case("POST", "/v1/tags/old:remove", USER_DATA, USER, {"user_ids": ["u1"]}),
    "track": Case("POST", "/v1/track", USER_DATA, tracked, {"user_id": "u1", "event": "login"}),
    "add suppression": Case(
        "POST", "/v1/suppressions", USER_DATA, got("/v1/suppressions"), {"user_id": "u1", "source": "complaint"}
    ),
    "inbox read all": Case("POST", "/v1/users/u1/inbox/read-all", USER_DATA, INBOX),
    "inbox read one": Case("POST", "/v1/users/u1/inbox/{message}/read", USER_DATA, INBOX),
    # editor (and admin): audiences
    "put segment": Case("PUT", "/v1/segments/vips", EDIT, got("/v1/segments/vips"), {"conditions": {"tag": "vip"}}),
    "delete segment": Case("DELETE", "/v1/segments/vips", EDIT, got("/v1/segments/vips")),
    "upload list": Case("POST", "/v1/lists?key=winners", EDIT, got("/v1/lists/winners"), content=b"u1\n"),
    "delete list": Case("DELETE", "/v1/lists/winners", EDIT, got("/v1/lists/winners")),
}


async def call(api: httpx.AsyncClient, case: Case, world: dict[str, str], role: str) -> httpx.Response:
    return await api.request(
        case.method,
        case.path.format(**world),
        json=case.json,
        content=case.content,
        headers={**as_role(role), **({"content-type": "text/plain"} if case.content is not None else {})},
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_a_write_needs_its_role_and_a_refusal_writes_nothing(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, world: dict[str, str], case: Case
) -> None:
    before, counts = await case.state(api, clarion), await row_counts(clarion)
    for role in ("editor", "approver", "sender"):
        if role in case.allowed:
            continue
        refused = await call(api, case, world, role)
        assert refused.status_code == 403, (role, refused.text)
        assert refused.headers["content-type"] == "application/json"
        error = refused.json()["error"]
        assert error["code"] == "forbidden"
        assert error["details"] == {"needs": list(case.allowed), "roles": [role]}
        assert await case.state(api, clarion) == before, role
        assert await row_counts(clarion) == counts, role

    role = next((r for r in ("sender", "editor") if r in case.allowed), "admin")
    done = await call(api, case, world, role)
    assert 200 <= done.status_code < 300, (role, done.text)
    assert await case.state(api, clarion) != before  # what the refusals were checked against does show a write


async def raw_post(
    clarion: bootstrap.Clarion, path: str, query: bytes, role: str, body: bytes, content_type: bytes
) -> tuple[int, bool]:
    """POST at the ASGI level: the status answered, and whether the application asked for the body at all."""
    app = create_app(clarion=clarion)
    asked = False
    status = 0

    async def receive() -> Message:
        nonlocal asked
        asked = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [
            (b"host", b"clarion.test"),
            (b"authorization", f"Bearer {KEYS[role]}".encode()),
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("clarion.test", 80),
    }
    await app(scope, receive, send)
    return status, asked


@pytest.mark.parametrize(
    ("path", "query", "body", "content_type", "allowed"),
    [
        ("/v1/users:batch", b"", b'[{"user_id": "u7"}]', b"application/json", "sender"),
        ("/v1/track", b"", b'{"user_id": "u7", "event": "login"}', b"application/json", "sender"),
        ("/v1/lists", b"key=late", b"u7\n", b"text/plain", "editor"),
    ],
    ids=["users batch", "track", "upload list"],
)
async def test_bulk_uploads_are_refused_before_their_body_is_read(
    clarion: bootstrap.Clarion,
    world: dict[str, str],
    path: str,
    query: bytes,
    body: bytes,
    content_type: bytes,
    allowed: str,
) -> None:
    counts = await row_counts(clarion)
    for role in ("approver", "sender" if allowed == "editor" else "editor"):
        assert await raw_post(clarion, path, query, role, body, content_type) == (403, False), role
    assert await row_counts(clarion) == counts
    status, asked = await raw_post(clarion, path, query, allowed, body, content_type)
    assert (status // 100, asked) == (2, True)  # the probe does see a read


@pytest.mark.parametrize("role", ["sender", "approver"])
async def test_reads_and_read_like_posts_need_only_a_valid_key(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, world: dict[str, str], role: str
) -> None:
    campaign = await api.put(
        "/v1/campaigns/spring", json={"template": "note", "audience": {"segment": "vips"}, "data": {"n": 3}}
    )
    assert campaign.status_code == 201, campaign.text
    counts = await row_counts(clarion)
    headers = as_role(role)
    for path, body in (
        ("/v1/policies/check", {"user_id": "u1", "template": "note", "data": {"n": 3}}),
        ("/v1/templates/note/preview", {"user_id": "u1", "data": {"n": 3}}),
        ("/v1/segments:count", {"conditions": {"tag": "old"}}),
        ("/v1/campaigns/spring/estimate", None),
    ):
        answered = await api.post(path, json=body, headers=headers)
        assert answered.status_code == 200, (path, answered.text)
    assert (await api.post("/v1/segments:count", json={"conditions": {"tag": "old"}}, headers=headers)).json()[
        "count"
    ] == 1
    assert await row_counts(clarion) == counts  # they computed an answer and wrote nothing
    for path in (
        "/v1/policies/settings",
        "/v1/policies/caps",
        "/v1/keyword-lists/banned",
        "/v1/suppressions",
        "/v1/users/u1",
        "/v1/users/u1/preferences",
        "/v1/users/u1/inbox",
        "/v1/users/u1/inbox/count",
        "/v1/segments/vips",
        "/v1/segments/vips/count",
        "/v1/lists/winners",
        "/v1/campaigns/spring",
    ):
        assert (await api.get(path, headers=headers)).status_code == 200, path
