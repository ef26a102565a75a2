"""The in-app inbox: listing, unread filter, counts, marking read, and the read on the timeline."""

from __future__ import annotations

import asyncio
from datetime import datetime

from clarion import bootstrap
from tests.conftest import drain, put_template, put_user


async def fill_inbox(api, clarion: bootstrap.Clarion, count: int, user_id: str = "u1") -> list[str]:
    """Send ``count`` inbox messages to ``user_id`` and deliver them; their ids, oldest first."""
    await put_user(api, user_id)
    await put_template(api, "note", channels={"inbox": {"title": "Note {data.n}", "body": "Body {data.n}"}})
    message_ids = []
    for n in range(count):
        response = await api.post("/v1/messages", json={"template": "note", "to": user_id, "data": {"n": n}})
        assert response.status_code == 202
        message_ids.append(response.json()["messages"][0]["id"])
        await asyncio.sleep(0.003)  # distinct milliseconds, so "newest first" is well defined
    assert await drain(clarion) == count
    return message_ids


async def test_list_is_newest_first_with_content(api, clarion: bootstrap.Clarion) -> None:
    ids = await fill_inbox(api, clarion, 3)
    response = await api.get("/v1/users/u1/inbox")
    assert response.status_code == 200
    page = response.json()
    assert [i["message_id"] for i in page["items"]] == list(reversed(ids))
    assert [(i["title"], i["body"], i["url"], i["read_at"]) for i in page["items"]] == [
        ("Note 2", "Body 2", None, None),
        ("Note 1", "Body 1", None, None),
        ("Note 0", "Body 0", None, None),
    ]
    assert page["next_cursor"] is None
    assert datetime.fromisoformat(page["items"][0]["created_at"]).utcoffset() is not None


async def test_list_paginates(api, clarion: bootstrap.Clarion) -> None:
    ids = await fill_inbox(api, clarion, 5)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/users/u1/inbox", params=params)).json()
        seen += [i["message_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


async def test_inbox_is_per_user(api, clarion: bootstrap.Clarion) -> None:
    await fill_inbox(api, clarion, 2)
    await put_user(api, "u2")
    assert (await api.get("/v1/users/u2/inbox")).json() == {"items": [], "next_cursor": None}
    assert (await api.get("/v1/users/u2/inbox/count")).json() == {"total": 0, "unread": 0}


async def test_nothing_is_in_the_inbox_before_delivery(api) -> None:
    await put_user(api, "u1")
    await put_template(api, "note", channels={"inbox": {"title": "T", "body": "B"}})
    await api.post("/v1/messages", json={"template": "note", "to": "u1"})
    assert (await api.get("/v1/users/u1/inbox/count")).json() == {"total": 0, "unread": 0}


async def test_mark_one_read_changes_count_and_unread_filter(api, clarion: bootstrap.Clarion) -> None:
    ids = await fill_inbox(api, clarion, 3)
    assert (await api.get("/v1/users/u1/inbox/count")).json() == {"total": 3, "unread": 3}

    response = await api.post(f"/v1/users/u1/inbox/{ids[1]}/read")
    assert response.status_code == 200
    assert response.json() == {"message_id": ids[1], "read": True}
    assert (await api.get("/v1/users/u1/inbox/count")).json() == {"total": 3, "unread": 2}

    unread = (await api.get("/v1/users/u1/inbox", params={"unread": "true"})).json()["items"]
    assert [i["message_id"] for i in unread] == [ids[2], ids[0]]
    everything = (await api.get("/v1/users/u1/inbox")).json()["items"]
    read_at = {i["message_id"]: i["read_at"] for i in everything}
    assert read_at[ids[0]] is None and read_at[ids[2]] is None
    assert datetime.fromisoformat(read_at[ids[1]]).utcoffset() is not None

    again = await api.post(f"/v1/users/u1/inbox/{ids[1]}/read")
    assert again.status_code == 200
    assert again.json() == {"message_id": ids[1], "read": True}
    assert (await api.get("/v1/users/u1/inbox/count")).json() == {"total": 3, "unread": 2}
    after = {i["message_id"]: i["read_at"] for i in (await api.get("/v1/users/u1/inbox")).json()["items"]}
    assert after[ids[1]] == read_at[ids[1]]  # the first read time is kept


async def test_mark_read_of_unknown_item_is_404(api, clarion: bootstrap.Clarion) -> None:
    ids = await fill_inbox(api, clarion, 1)
    response = await api.post("/v1/users/u1/inbox/01ARZ3NDEKTSV4RRFFQ69G5FAV/read")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    # another user's message is not this user's item
    await put_user(api, "u2")
    assert (await api.post(f"/v1/users/u2/inbox/{ids[0]}/read")).status_code == 404
    assert (await api.get("/v1/users/u1/inbox/count")).json() == {"total": 1, "unread": 1}


async def test_read_all_reports_how_many_it_updated(api, clarion: bootstrap.Clarion) -> None:
    ids = await fill_inbox(api, clarion, 3)
    await api.post(f"/v1/users/u1/inbox/{ids[0]}/read")
    response = await api.post("/v1/users/u1/inbox/read-all")
    assert response.status_code == 200
    assert response.json() == {"updated": 2}
    assert (await api.get("/v1/users/u1/inbox/count")).json() == {"total": 3, "unread": 0}
    assert (await api.get("/v1/users/u1/inbox", params={"unread": "true"})).json()["items"] == []
    assert (await api.post("/v1/users/u1/inbox/read-all")).json() == {"updated": 0}
    assert (await api.post("/v1/users/nobody/inbox/read-all")).json() == {"updated": 0}


async def test_a_read_is_on_the_message_timeline_once(api, clarion: bootstrap.Clarion) -> None:
    [message_id] = await fill_inbox(api, clarion, 1)
    await api.post(f"/v1/users/u1/inbox/{message_id}/read")
    await api.post(f"/v1/users/u1/inbox/{message_id}/read")
    await api.post("/v1/users/u1/inbox/read-all")
    detail = (await api.get(f"/v1/messages/{message_id}")).json()
    [delivery] = detail["deliveries"]
    assert [e["status"] for e in delivery["timeline"]] == ["queued", "sending", "sent", "delivered", "read"]
    read = delivery["timeline"][-1]
    assert read["reason"] == "read in the inbox"
    assert datetime.fromisoformat(read["at"]).utcoffset() is not None


async def test_read_all_puts_a_read_on_every_timeline(api, clarion: bootstrap.Clarion) -> None:
    ids = await fill_inbox(api, clarion, 2)
    assert (await api.post("/v1/users/u1/inbox/read-all")).json() == {"updated": 2}
    for message_id in ids:
        detail = (await api.get(f"/v1/messages/{message_id}")).json()
        assert detail["deliveries"][0]["timeline"][-1]["status"] == "read"


async def test_inbox_query_bounds(api) -> None:
    assert (await api.get("/v1/users/u1/inbox", params={"limit": 0})).status_code == 422
    assert (await api.get("/v1/users/u1/inbox", params={"limit": 201})).status_code == 422
    assert (await api.get("/v1/users/u1/inbox", params={"unread": "maybe"})).status_code == 422
