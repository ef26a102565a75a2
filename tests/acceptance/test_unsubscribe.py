"""One-click unsubscribe, end to end: a marketing e-mail carries the link, the link's page records the
unsubscribe (from a browser or a mail client's RFC 8058 POST, without an API key), and the next marketing
e-mail to that user is filtered while their other mail still goes out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.domain.policy import config
from clarion.store import policies as store_policies
from tests.conftest import drain, put_template, put_user, set_approval, sink

EMAIL = "li@example.com"
PHONE = "+8613800138000"
ONE_CLICK = {"content": b"List-Unsubscribe=One-Click", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}


@pytest.fixture(autouse=True)
async def _no_review(clarion: bootstrap.Clarion) -> None:
    """Marketing templates here are sendable once saved: review is tested in test_template_versions."""
    await set_approval(clarion, levels={})


@pytest.fixture
async def public(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """A client without an API key, like a browser or a mail client following the link."""
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


async def setup(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    """A user with e-mail and SMS, a marketing and a receipt template; marketing allowed at any hour."""

    async def no_send_windows(conn: AsyncConnection) -> None:
        await store_policies.save_settings(conn, config.PolicySettings(send_windows={}), datetime.now(UTC))

    await clarion.db.write(no_send_windows)
    clarion.catalog.invalidate()
    await put_user(api, "u1", attributes={"name": "Li"}, addresses={"email": EMAIL, "sms": PHONE})
    await put_template(
        api,
        "promo",
        category="marketing",
        channels={
            "email": {"subject": "Sale {data.n}", "text": "Hi {name}, sale number {data.n}"},
            "sms": {"text": "Sale {data.n}"},
        },
    )
    await put_template(api, "receipt", channels={"email": {"subject": "Receipt {data.n}", "text": "Paid {data.n}"}})


async def send(api: httpx.AsyncClient, template: str, n: int, channels: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"template": template, "to": "u1", "data": {"n": n}}
    if channels is not None:
        body["channels"] = channels
    response = await api.post("/v1/messages", json=body)
    assert response.status_code == 202, response.text
    [message] = response.json()["messages"]
    return message


async def unsubscribe_path(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> str:
    """Send one marketing e-mail and return the path of the unsubscribe link it carried."""
    assert (await send(api, "promo", 1, ["email"]))["status"] == "queued"
    await drain(clarion)
    [mail] = sink(clarion, "email")
    headers = mail["content"]["headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = headers["List-Unsubscribe"]
    base = clarion.settings.public_url.rstrip("/")
    assert link.startswith(f"<{base}/u/") and link.endswith(">"), link
    return link[1:-1].removeprefix(base)


async def suppressions(clarion: bootstrap.Clarion) -> list[config.Suppression]:
    async with clarion.db.read() as conn:
        return await store_policies.suppressions_for(conn, ["u1"], [])


def assert_html(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    return response.text


async def test_a_marketing_email_carries_a_link_that_unsubscribes_from_marketing_email(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await setup(api, clarion)
    path = await unsubscribe_path(api, clarion)

    page = assert_html(await public.get(path), 200)
    assert '<form method="post">' in page
    assert "marketing e-mail" in page
    assert EMAIL not in page and "u1" not in page
    assert await suppressions(clarion) == []  # opening the link records nothing

    done = assert_html(await public.post(path, **ONE_CLICK), 200)
    assert "You are unsubscribed" in done
    [suppression] = await suppressions(clarion)
    assert (suppression.user_id, suppression.category, suppression.channel) == ("u1", "marketing", "email")
    assert (suppression.source, suppression.reason) == ("unsubscribe_link", "one-click unsubscribe")

    again = assert_html(await public.post(path, **ONE_CLICK), 200)
    assert "already unsubscribed" in again
    assert await suppressions(clarion) == [suppression]

    filtered = await send(api, "promo", 2, ["email"])
    assert filtered["status"] == "filtered"
    [delivery] = (await api.get(f"/v1/messages/{filtered['id']}")).json()["deliveries"]
    assert delivery["status"] == "filtered"
    assert delivery["decided_by"]["policy"] == "suppression"
    assert delivery["decided_by"]["reason"].startswith("unsubscribed: user u1 is suppressed for marketing email")

    assert (await send(api, "receipt", 3))["status"] == "queued"
    assert (await send(api, "promo", 4, ["sms"]))["status"] == "queued"  # the link was for e-mail only
    await drain(clarion)
    subjects = [mail["content"]["subject"] for mail in sink(clarion, "email")]
    assert subjects == ["Sale 1", "Receipt 3"]
    assert [sms["content"]["text"] for sms in sink(clarion, "sms")] == ["Sale 4"]


async def test_the_page_works_through_the_button_with_the_api_client_too(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await setup(api, clarion)
    path = await unsubscribe_path(api, clarion)

    assert_html(await api.post(path, content=b"", headers={"Content-Type": "text/plain"}), 200)

    assert [s.source for s in await suppressions(clarion)] == ["unsubscribe_link"]


async def test_transactional_email_carries_no_unsubscribe_link(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    await setup(api, clarion)
    await send(api, "receipt", 1)
    await drain(clarion)

    [mail] = sink(clarion, "email")
    assert mail["content"]["subject"] == "Receipt 1"
    assert "headers" not in mail["content"]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_forged_or_damaged_link_is_refused_and_records_nothing(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion, method: str
) -> None:
    await setup(api, clarion)
    path = await unsubscribe_path(api, clarion)
    payload, _, signature = path.removeprefix("/u/").partition(".")
    damaged = [
        f"/u/{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}",
        f"/u/{payload[:-4]}.{signature}",
        f"/u/{payload}",
        "/u/%F0%9F%92%A5.%F0%9F%92%A5",
        "/u/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E.x",
    ]

    for bad in damaged:
        page = assert_html(await public.request(method, bad, **(ONE_CLICK if method == "POST" else {})), 400)
        assert "not valid" in page
        assert "<img" not in page

    assert await suppressions(clarion) == []
