import asyncio
import json
from tests.conftest import drain, put_template, put_user


async def test_probe(api, clarion):
    async def gen():
        for _ in range(2000):
            yield b"x" * 1024
    r = await api.post("/v1/messages", content=gen(), headers={"content-type": "application/json"})
    print("chunked", r.status_code, r.text[:200])
    r = await api.post("/v1/messages", content=b"{", headers={"content-type": "application/json", "authorization": ""})
    print("malformed noauth", r.status_code, r.text[:200])
    r = await api.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
    print("malformed", r.status_code, r.text[:300])
    r = await api.post("/v1/messages", content=b"x" * 2_000_000, headers={"content-type": "application/json"})
    print("big", r.status_code, r.text[:300])
    await put_user(api, "u1", addresses={"email": "a@b.co"})
    await put_template(api, "t", channels={"inbox": {"title": "T", "body": "B"}})
    rs = await asyncio.gather(*[api.post("/v1/messages", json={"template": "t", "to": "u1"}) for _ in range(30)])
    ids = [r.json()["messages"][0]["id"] for r in rs]
    seen = []
    cursor = None
    while True:
        params = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/v1/users/u1/messages", params=params)).json()
        seen += [m["id"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    print("pagination", len(seen), len(set(seen)), len(ids))
    r = await api.put("/v1/rules/r", json={"event": "e", "template": "t", "condition": ""})
    print("rule empty", r.status_code, r.text[:300])
    r = await api.post("/v1/events", json={"name": "e", "user_id": "u1"})
    print("event", r.status_code, r.text[:300])
    r = await api.put("/v1/rules/r2", json={"event": "e", "template": "t", "condition": "data.a >"})
    print("rule bad", r.status_code, r.text[:300])
    await put_user(api, "u2")
    r = await api.post("/v1/messages", json={"template": "t", "to": "u2"})
    r = await api.delete("/v1/users/u2")
    print(await drain(clarion))
    print("inbox after", (await api.get("/v1/users/u2/inbox")).json())
    print((await api.get("/metrics")).text[-1500:])
    r = await api.put("/v1/users/u3", json={"addresses": {"sms": "12345"}})
    print(r.status_code, r.text)
    r = await api.put("/v1/providers/p", json={"channel": "email", "kind": "smtp", "config": {"host": "h", "sender": "a@b.co", "port": "x", "bogus": 1}})
    print(r.status_code, r.text)
