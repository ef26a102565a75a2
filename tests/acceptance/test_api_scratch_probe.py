from tests.conftest import put_template, put_user, drain


async def test_probe(api, clarion):
    await put_user(api, "u1")
    await put_template(api, "t", channels={"inbox": {"title": "T", "body": "B"}})
    r = await api.put("/v1/providers/inbox", json={"channel": "email", "kind": "smtp", "config": {"host": "127.0.0.1", "port": 9, "sender": "a@b.co", "timeout": 0.5}})
    print(r.status_code, r.text)
    r = await api.post("/v1/messages", json={"template": "t", "to": "u1"})
    print(await drain(clarion))
    print((await api.get("/v1/users/u1/inbox")).json())
    print((await api.get(f"/v1/messages/{r.json()['messages'][0]['id']}")).json()["deliveries"])
    r = await api.put("/v1/providers/p", json={"channel": "email", "kind": "inbox", "config": {}})
    print(r.status_code, r.text)
    r = await api.put("/v1/providers/p", json={"channel": "email", "kind": "nope", "config": {}})
    print(r.status_code, r.text)
    r = await api.put("/v1/providers/p", json={"channel": "sms", "kind": "smtp", "config": {}})
    print(r.status_code, r.text)
    r = await api.put("/v1/providers/p", json={"channel": "sms", "kind": "sms_http", "config": {}})
    print(r.status_code, r.text)
