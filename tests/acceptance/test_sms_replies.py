"""SMS replies (上行) through ``POST /r/{provider}/replies``: a keyword reply suppresses marketing SMS to that phone
(source ``sms_reply``) and gets its confirmation; keywords are per sending number or sign; duplicates and
non-keyword replies are kept and change nothing; the keyword table is validated, admin-only and audited.

The provider kind here is a small one written for the test (a shared token, a JSON list of replies), so that
what is tested is what Clarion does with a reply; each vendor's own reply format is tested with its kind."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import orjson
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.channels import base, registry
from clarion.domain import model
from clarion.store import tables as t
from tests.conftest import put_template, put_user, set_approval

PHONE = "+8613912345678"
SENT: list[model.Outgoing] = []


class ReplyingSms:
    kind: ClassVar[str] = "replying_sms"
    channels: ClassVar[frozenset[model.Channel]] = frozenset({model.Channel.SMS})

    class Config(base.ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"token"})
        token: str

    def __init__(self, config: Config, *, name: str) -> None:
        self.config = config
        self.name = name

    async def send(self, batch: Sequence[model.Outgoing]) -> list[model.SendResult]:
        SENT.extend(batch)
        return [model.SendResult(o.delivery_id, provider_message_id="v-" + o.delivery_id) for o in batch]

    async def close(self) -> None:
        pass

    @property
    def takes_replies(self) -> bool:
        return True

    def replies(self, callback: base.Callback) -> list[base.Reply]:
        if not base.same_secret(self.config.token, callback.headers.get("x-token")):
            raise base.RefusedCallback("missing or wrong X-Token")
        try:
            items = orjson.loads(callback.body)
        except orjson.JSONDecodeError:
            raise base.UnreadableCallback("not JSON") from None
        return [base.Reply(i["from"], i["text"], i["id"], to=i.get("to"), sign=i.get("sign")) for i in items]


@pytest.fixture(autouse=True)
def _kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.KINDS, ReplyingSms.kind, ReplyingSms)
    SENT.clear()


async def account(api: Any) -> None:
    body = {"channel": "sms", "kind": "replying_sms", "config": {"token": "t0ken"}}
    assert (await api.put("/v1/providers/vendor", json=body)).status_code == 201


async def reply(api: Any, *items: dict[str, Any], token: str = "t0ken") -> Any:
    return await api.post(
        "/r/vendor/replies", content=orjson.dumps(list(items)), headers={"X-Token": token, "Authorization": ""}
    )


async def suppressions(clarion: bootstrap.Clarion) -> list[Any]:
    async with clarion.db.read() as conn:
        return list((await conn.execute(sa.select(t.suppressions))).all())


async def test_a_td_reply_stops_marketing_sms_and_is_confirmed(api, clarion: bootstrap.Clarion) -> None:
    await account(api)
    keywords = {"keywords": [{"word": "TD", "confirmation": "您已退订"}, {"word": "退订"}]}
    assert (await api.put("/v1/sms/keywords", json=keywords)).status_code == 200
    taken = await reply(api, {"from": PHONE, "text": " td。", "id": "mo-1", "to": "106900"})
    assert taken.status_code == 200, taken.text
    assert taken.json() == {"accepted": 1, "duplicates": 0, "unsubscribed": 1}
    [suppression] = await suppressions(clarion)
    assert (suppression.address, suppression.channel, suppression.category, suppression.source) == (
        PHONE,
        "sms",
        "marketing",
        "sms_reply",
    )
    [confirmation] = SENT
    assert (confirmation.address, confirmation.content) == (PHONE, {"text": "您已退订"})
    [shown] = (await api.get("/v1/sms/replies")).json()["replies"]
    assert (shown["keyword"], shown["action"], shown["confirmation"]) == ("TD", "unsubscribed", "sent")
    assert shown["suppression_id"] == suppression.id

    await set_approval(clarion, levels={})  # a marketing template sendable once saved
    await api.put("/v1/policies/settings", json={"send_windows": {}})
    await put_user(api, "u1", addresses={"sms": PHONE})
    await put_template(api, "sale", category="marketing", channels={"sms": {"text": "sale"}})
    await put_template(api, "code", category="verification", channels={"sms": {"text": "1234"}})
    promo = (await api.post("/v1/messages", json={"template": "sale", "to": "u1"})).json()["messages"]
    code = (await api.post("/v1/messages", json={"template": "code", "to": "u1"})).json()["messages"]
    assert [m["status"] for m in promo] == ["filtered"]
    assert [m["status"] for m in code] == ["queued"]


async def test_a_duplicate_reply_and_an_ordinary_one_change_nothing(api, clarion: bootstrap.Clarion) -> None:
    await account(api)
    first = await reply(api, {"from": PHONE, "text": "退订", "id": "mo-1"})
    again = await reply(
        api, {"from": PHONE, "text": "退订", "id": "mo-1"}, {"from": PHONE, "text": "谢谢", "id": "mo-2"}
    )
    sentence = await reply(api, {"from": PHONE, "text": "I will not TD", "id": "mo-3"})
    assert first.json()["unsubscribed"] == 1
    assert again.json() == {"accepted": 1, "duplicates": 1, "unsubscribed": 0}
    assert sentence.json()["unsubscribed"] == 0
    assert len(await suppressions(clarion)) == 1
    assert [r["text"] for r in (await api.get("/v1/sms/replies")).json()["replies"]] == [
        "I will not TD",
        "谢谢",
        "退订",
    ]
    assert SENT == []  # the default keywords carry no confirmation


async def test_keywords_are_per_sender(api, clarion: bootstrap.Clarion) -> None:
    await account(api)
    table = {"keywords": [{"word": "0", "scope": "【ShopA】"}, {"word": "STOP"}]}
    assert (await api.put("/v1/sms/keywords", json=table)).status_code == 200
    other = await reply(api, {"from": PHONE, "text": "0", "id": "mo-1", "sign": "【ShopB】"})
    mine = await reply(api, {"from": "+8613800138000", "text": "0", "id": "mo-2", "sign": "【ShopA】"})
    assert (other.json()["unsubscribed"], mine.json()["unsubscribed"]) == (0, 1)
    assert [s.address for s in await suppressions(clarion)] == ["+8613800138000"]


async def test_a_reply_without_the_vendors_proof_is_refused_and_kept_nowhere(api, clarion: bootstrap.Clarion) -> None:
    await account(api)
    refused = await reply(api, {"from": PHONE, "text": "TD", "id": "mo-1"}, token="wrong")
    assert refused.status_code == 401
    assert await suppressions(clarion) == []
    assert (await api.get("/v1/sms/replies")).json()["replies"] == []
    assert (await api.post("/r/nobody/replies", content=b"[]")).status_code == 404


async def test_the_keyword_table_is_checked_admin_only_and_audited(api, clarion: bootstrap.Clarion) -> None:
    assert [k["word"] for k in (await api.get("/v1/sms/keywords")).json()["keywords"]] == [
        "TD",
        "退订",
        "T",
        "N",
        "STOP",
        "UNSUBSCRIBE",
    ]
    twice = await api.put("/v1/sms/keywords", json={"keywords": [{"word": "td"}, {"word": "TD "}]})
    assert twice.status_code == 422 and "keywords.1.word" in twice.text
    shapeless = await api.put("/v1/sms/keywords", json={"words": ["TD"]})
    assert shapeless.status_code == 422
    await clarion.keys.create("sender", ("sender",), key="ck_sender_keywords_0000000000000")
    forbidden = await api.put(
        "/v1/sms/keywords",
        json={"keywords": []},
        headers={"Authorization": "Bearer ck_sender_keywords_0000000000000"},
    )
    assert forbidden.status_code == 403
    assert (await api.put("/v1/sms/keywords", json={"keywords": [{"word": "QX"}]})).status_code == 200
    async with clarion.db.read() as conn:
        actions = [r.action for r in (await conn.execute(sa.select(t.audit_log.c.action))).all()]
    assert actions.count("sms_keywords.update") == 1
