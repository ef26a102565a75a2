"""The e-mail open pixel: off unless the template's e-mail content says ``track_opens``; with it, the HTML carries
a signed 1x1 image whose fetch makes the delivery ``read`` (the funnel's ``opened``) once, while every fetch — a
repeat, a forged token, a deleted delivery — still gets the image."""

from __future__ import annotations

import re
from typing import Any

import httpx

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user, sink

HTML = '<html><body><p>Hi {userName}</p><a href="https://shop.example.com/sale">Sale</a></body></html>'
PIXEL = re.compile(r'<img src="http://[^/]+/o/([0-9a-f]+\.[A-Za-z0-9_-]+)\.gif" width="1" height="1"')


async def mail(api: httpx.AsyncClient, clarion: bootstrap.Clarion, **email: Any) -> tuple[str, dict[str, Any]]:
    await put_user(api, "u1", attributes={"userName": "Li"}, addresses={"email": "li@example.com"})
    email.setdefault("subject", "Sale")
    await put_template(api, "sale", channels={"email": {"html": HTML, **email}})
    sent = await api.post("/v1/messages", json={"template": "sale", "to": "u1"})
    assert sent.status_code == 202, sent.text
    await drain(clarion)
    line = sink(clarion, "email")[-1]
    assert line["message_id"] == sent.json()["messages"][0]["id"]
    return line["message_id"], line["content"]


async def delivery(api: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
    (found,) = (await api.get(f"/v1/messages/{message_id}")).json()["deliveries"]
    return found


async def opened(api: httpx.AsyncClient) -> int:
    answer = await api.get("/v1/analytics/funnel", params={"channel": "email"})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["total"]["stages"].get("opened", 0))


async def test_a_tracked_email_is_opened_once_when_its_pixel_is_fetched(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    message_id, content = await mail(api, clarion, track_opens=True)
    assert "track_opens" not in content  # the switch is not handed to the mail server
    found = PIXEL.search(content["html"])
    assert found is not None, content["html"]
    assert content["html"].index("<img") < content["html"].index("</body>")

    first = await public.get(f"/o/{found.group(1)}.gif")
    assert first.status_code == 200 and first.headers["content-type"] == "image/gif"
    assert first.content.startswith(b"GIF89a") and "no-store" in first.headers["cache-control"]
    assert (await public.get(f"/o/{found.group(1)}.gif")).status_code == 200
    shown = await delivery(api, message_id)
    assert shown["status"] == "read"
    (reason,) = [e["reason"] for e in shown["timeline"] if e["status"] == "read"]
    assert reason.startswith("opened: its image was loaded")
    assert await opened(api) == 1
    stages = (await api.get("/v1/analytics/funnel", params={"channel": "email"})).json()["total"]["stages"]
    assert (stages["sent"], stages["delivered"], stages["opened"]) == (1, 1, 1)  # an open implies delivered


async def test_a_forged_or_unknown_pixel_gets_the_image_and_records_nothing(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    message_id, content = await mail(api, clarion, track_opens=True)
    found = PIXEL.search(content["html"])
    assert found is not None
    delivery_id, signature = found.group(1).split(".")
    forged = f"{delivery_id}.{'A' * len(signature)}"
    other = f"{'0' * 32}.{signature}"
    for token in (forged, other, "garbage", "é.x"):
        answer = await public.get(f"/o/{token}.gif")
        assert answer.status_code == 200 and answer.content.startswith(b"GIF89a"), token
    assert (await delivery(api, message_id))["status"] == "sent"
    assert await opened(api) == 0


async def test_without_track_opens_no_pixel_is_added(
    api: httpx.AsyncClient, public: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    _, content = await mail(api, clarion)
    assert "<img" not in content["html"] and "/o/" not in content["html"]
    _, off = await mail(api, clarion, track_opens=False, subject="Sale, again")
    assert "<img" not in off["html"] and "track_opens" not in off


async def test_the_switch_must_be_a_boolean(api: httpx.AsyncClient) -> None:
    answer = await api.put(
        "/v1/templates/sale",
        json={
            "name": "sale",
            "category": "notification",
            "channels": {"email": {"subject": "S", "html": HTML, "track_opens": "yes"}},
        },
    )
    assert answer.status_code == 422 and "track_opens" in answer.text
