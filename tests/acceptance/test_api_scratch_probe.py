import asyncio
import pytest
from tests.conftest import put_template, put_user


@pytest.mark.parametrize("i", range(5))
async def test_probe(api, clarion, i):
    await put_user(api, "u1")
    await put_template(api, "t", channels={"inbox": {"title": "T", "body": "B"}})
    rs = await asyncio.gather(*[api.post("/v1/messages", json={"template": "t", "to": "u1"}) for _ in range(40)])
    ids = [r.json()["messages"][0]["id"] for r in rs]
    page = (await api.get("/v1/users/u1/messages", params={"limit": 500})).json()
    got = [(m["created_at"], m["id"]) for m in page["messages"]]
    inv = sum(1 for a, b in zip(got, got[1:]) if a[1] < b[1])
    print(clarion.db.dialect, "inversions", inv, "ms span", got[0][0], got[-1][0])
