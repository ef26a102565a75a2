"""Short links, end to end: an SMS goes out with its URL replaced by a short link on Clarion's domain, following
the link redirects to the original URL (with UTM parameters) and puts ``clicked`` on the delivery's timeline,
without an API key; unknown codes get a friendly 404."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.settings import Settings
from clarion.store import tables as t
from tests.conftest import drain, put_template, put_user, sink

PHONE = "+8613800138000"
SHOP = "https://shop.example.com/p?id={data.n}"
UTM = "utm_source=clarion&utm_medium={channel}&utm_campaign={template}"
PERSON = {"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"}


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The suite's settings with the UTM setting on; a test changes more with indirect parametrization."""
    update = {"short_link_utm": UTM, **getattr(request, "param", {})}
    return settings.model_copy(update=update)


@pytest.fixture
async def public(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """A client without an API key, like the phone of the user following the link."""
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test", headers=PERSON) as client:
        yield client


async def setup(api: httpx.AsyncClient, *users: str) -> None:
    for user_id in users or ("u1",):
        await put_user(api, user_id, addresses={"sms": PHONE, "email": f"{user_id}@example.com"})
    await put_template(api, "promo", channels={"sms": {"text": f"Sale #{{data.n}}: 点击{SHOP}查看。"}})


async def send(api: httpx.AsyncClient, n: int, to: str | list[str] = "u1", template: str = "promo") -> list[str]:
    response = await api.post("/v1/messages", json={"template": template, "to": to, "data": {"n": n}})
    assert response.status_code == 202, response.text
    return [m["id"] for m in response.json()["messages"]]


def short_code(clarion: bootstrap.Clarion, text: str) -> str:
    base = re.escape(clarion.settings.public_url.rstrip("/"))
    match = re.search(rf"{base}/s/([0-9A-Za-z]+)", text)
    assert match, text
    return match.group(1)


async def delivery(api: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/messages/{message_id}")
    assert response.status_code == 200, response.text
    [one] = response.json()["deliveries"]
    return one


async def link_rows(clarion: bootstrap.Clarion) -> list[Any]:
    async with clarion.db.read() as conn:
        return list((await conn.execute(sa.select(t.short_links).order_by(t.short_links.c.created_at))).all())


def clicked(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in timeline if event["status"] == "clicked"]


async def test_click_redirects_and_lands_on_the_timeline(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await setup(api)
    [message_id] = await send(api, 1)
    await drain(clarion)
    [record] = sink(clarion, "sms")
    text = record["content"]["text"]
    assert "shop.example.com" not in text
    code = short_code(clarion, text)
    assert len(code) <= 8
    assert text == f"Sale #1: 点击{clarion.settings.public_url}/s/{code}查看。"
    assert (await delivery(api, message_id))["status"] == "sent"

    response = await public.get(f"/s/{code}")
    assert response.status_code == 302
    assert response.headers["location"] == (
        "https://shop.example.com/p?id=1&utm_source=clarion&utm_medium=sms&utm_campaign=promo"
    )
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"

    sms = await delivery(api, message_id)
    assert sms["status"] == "clicked"
    statuses = [event["status"] for event in sms["timeline"]]
    assert statuses[-2:] == ["sent", "clicked"]
    [event] = clicked(sms["timeline"])
    assert event["detail"]["code"] == code
    assert event["detail"]["clicks"] == 1
    assert event["detail"]["user_agent"] == PERSON["User-Agent"]
    [row] = await link_rows(clarion)
    assert (row.clicks, row.message_id, row.user_id, row.channel) == (1, message_id, "u1", "sms")
    first_clicked_at = row.first_clicked_at
    assert first_clicked_at is not None

    # the API's own client (with its key) works the same; a second click is counted, not put on the timeline again
    again = await api.get(f"/s/{code}")
    assert again.status_code == 302 and again.headers["location"] == response.headers["location"]
    [row] = await link_rows(clarion)
    assert row.clicks == 2 and row.first_clicked_at == first_clicked_at
    sms = await delivery(api, message_id)
    assert sms["status"] == "clicked" and len(clicked(sms["timeline"])) == 1


async def test_previews_and_head_requests_are_redirected_but_not_counted(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await setup(api)
    [message_id] = await send(api, 1)
    await drain(clarion)
    code = short_code(clarion, sink(clarion, "sms")[0]["content"]["text"])

    head = await public.head(f"/s/{code}")
    preview = await public.get(f"/s/{code}", headers={"User-Agent": "facebookexternalhit/1.1 Facebot Twitterbot/1.0"})
    for response in (head, preview):
        assert response.status_code == 302
        assert response.headers["location"].startswith("https://shop.example.com/p?id=1&")
    [row] = await link_rows(clarion)
    assert row.clicks == 0 and row.first_clicked_at is None
    sms = await delivery(api, message_id)
    assert sms["status"] == "sent" and clicked(sms["timeline"]) == []


async def test_a_click_before_the_send_is_recorded_leaves_the_outbox_its_status(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await setup(api)
    [message_id] = await send(api, 1)
    [row] = await link_rows(clarion)  # the link exists as soon as its delivery does
    assert (await public.get(f"/s/{row.code}")).status_code == 302
    queued = await delivery(api, message_id)
    assert queued["status"] == "queued" and len(clicked(queued["timeline"])) == 1
    await drain(clarion)
    sent = await delivery(api, message_id)
    assert sent["status"] == "sent"
    assert [e["status"] for e in sent["timeline"]] == ["queued", "clicked", "sending", "sent"]


@pytest.mark.parametrize("path", ["/s/Zz9Zz9Zz", "/s/nope-not-a-code", "/s/" + "a" * 40])
async def test_an_unknown_code_gets_a_friendly_404_page(public: httpx.AsyncClient, path: str) -> None:
    response = await public.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "Link not found" in response.text
    assert response.headers["cache-control"] == "no-store"


async def test_each_delivery_gets_its_own_code(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await setup(api, "u1", "u2")
    first, second = await send(api, 1, to=["u1", "u2"])
    await drain(clarion)
    by_user = {r["user_id"]: short_code(clarion, r["content"]["text"]) for r in sink(clarion, "sms")}
    assert set(by_user) == {"u1", "u2"} and by_user["u1"] != by_user["u2"]

    assert (await public.get(f"/s/{by_user['u2']}")).status_code == 302
    assert (await delivery(api, first))["status"] == "sent"
    assert (await delivery(api, second))["status"] == "clicked"
    assert {r.user_id: r.clicks for r in await link_rows(clarion)} == {"u1": 0, "u2": 1}


@pytest.mark.parametrize("settings", [{"short_links": "off"}], indirect=True)
async def test_with_short_links_off_urls_stay_as_written(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    await setup(api)
    await send(api, 1)
    await drain(clarion)
    [record] = sink(clarion, "sms")
    assert record["content"]["text"] == "Sale #1: 点击https://shop.example.com/p?id=1查看。"
    assert await link_rows(clarion) == []


@pytest.mark.parametrize("settings", [{"short_links": "all"}], indirect=True)
async def test_every_channel_option_rewrites_email_links_too(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await setup(api)
    html = '<p><a href="https://shop.example.com/mail?n={data.n}">Shop</a></p>'
    await put_template(
        api,
        "mail",
        channels={
            "email": {"subject": "Sale", "text": "Shop: https://shop.example.com/mail?n={data.n}", "html": html},
            "webhook": {"body": {"link": "https://shop.example.com/hook"}},
        },
    )
    await put_user(api, "u1", addresses={"email": "u1@example.com", "webhook": "http://127.0.0.1:9/hook"})
    [message_id] = await send(api, 2, template="mail", to="u1")
    [row] = [r for r in await link_rows(clarion) if r.channel == "email"]
    assert [r.channel for r in await link_rows(clarion)] == ["email"]  # webhook bodies are left alone
    await drain(clarion)
    [mail] = sink(clarion, "email")
    short = f"{clarion.settings.public_url}/s/{row.code}"
    assert mail["content"]["text"] == f"Shop: {short}"
    assert mail["content"]["html"] == f'<p><a href="{short}">Shop</a></p>'
    response = await public.get(f"/s/{row.code}")
    assert response.headers["location"] == (
        "https://shop.example.com/mail?n=2&utm_source=clarion&utm_medium=email&utm_campaign=mail"
    )
    assert message_id == row.message_id
