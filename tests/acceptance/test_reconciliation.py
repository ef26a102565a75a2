"""Reconciliation (对账) through the HTTP API: SMS sent through an ``sms_http`` vendor on loopback, priced per
segment, receipts posted back; the vendor's bill uploaded as CSV; ``GET /v1/reconciliation/{provider}?day=``
answers both sides' totals and exactly the deliveries that differ. Malformed bills are a 422 naming the line."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from clarion import bootstrap
from clarion.api.app import create_app
from tests.acceptance.test_costs import LONG, send
from tests.acceptance.test_e2e_channels import message, put_provider
from tests.acceptance.test_receipts import RECEIPTS, SECRET, signed
from tests.conftest import drain, put_template, put_user
from tests.integration.loopback import LoopbackServer, Recorded, Reply

PRICES = {"currency": "CNY", "unit": "segment", "default": 0.05}
TODAY = datetime.now(UTC).date().isoformat()


@pytest.fixture
async def vendor_side(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


async def sent(api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient) -> dict[str, str]:
    """Four SMS through account "vendor" (ids v-1 … v-4, v-3 a long one of three segments): v-1 and v-2
    delivered by their receipts, v-3 and v-4 with no receipt yet. Returns the delivery id of each vendor id."""
    numbers = itertools.count(1)

    def vendor(request: Recorded) -> Reply:
        return Reply(200, {"data": {"id": f"v-{next(numbers)}"}})

    async with LoopbackServer(handler=vendor) as server:
        config = {
            "url": f"{server.url}/send",
            "allow_private_networks": True,
            "message_id_path": "data.id",
            "timeout": 5,
            "receipts": RECEIPTS,
            "receipt_secret": SECRET,
            "prices": PRICES,
        }
        await put_provider(api, "vendor", "sms", "sms_http", config)
        await put_template(api, "short", channels={"sms": {"text": "shipped"}})
        await put_template(api, "long", channels={"sms": {"text": LONG}})
        deliveries = {}
        for n, template in ((1, "short"), (2, "short"), (3, "long"), (4, "short")):
            await put_user(api, f"u{n}", addresses={"sms": f"+861380013800{n}"})
            [message_id] = await send(api, template, f"u{n}")
            assert await drain(clarion) == 1
            [delivery] = (await message(api, message_id))["deliveries"]
            deliveries[delivery["provider_message_id"]] = delivery["id"]
    assert sorted(deliveries) == ["v-1", "v-2", "v-3", "v-4"]
    for vendor_id in ("v-1", "v-2"):
        answer = await vendor_side.post("/r/vendor", **signed({"msgid": vendor_id, "stat": "DELIVRD"}))
        assert answer.json()["accepted"] == 1, answer.text
    return deliveries


async def upload(api: httpx.AsyncClient, text: str, provider: str = "vendor", **params: Any) -> httpx.Response:
    return await api.post(
        f"/v1/reconciliation/{provider}", content=text.encode(), params=params, headers={"Content-Type": "text/csv"}
    )


async def reconciled(api: httpx.AsyncClient, day: str = TODAY) -> dict[str, Any]:
    response = await api.get("/v1/reconciliation/vendor", params={"day": day})
    assert response.status_code == 200, response.text
    return response.json()


BILL = f"""message_id,phone,status,segments,fee,sent_at
v-1,+8613800138001,success,1,0.05,{TODAY} 10:00:01
v-2,+8613800138002,fail,1,0.05,{TODAY} 10:00:02
v-3,+8613800138003,success,3,0.18,{TODAY} 10:00:03
v-4,+8613800138004,success,1,0.05,{TODAY} 10:00:04
v-9,+8613800138009,success,1,0.05,{TODAY} 10:00:09
"""


async def test_a_bill_with_three_discrepancies_shows_those_three_and_nothing_else(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    deliveries = await sent(api, clarion, vendor_side)
    uploaded = await upload(api, BILL)
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json() == {"provider": "vendor", "days": [TODAY], "lines": 5}

    answer = await reconciled(api)
    assert answer["ours"] == {"sent": 4, "delivered": 2, "failed": 0, "segments": 6, "cost": {"CNY": 0.3}}
    assert answer["theirs"] == {"lines": 5, "delivered": 4, "failed": 1, "segments": 7, "fee": {"CNY": 0.38}}
    assert answer["discrepancies"] == [
        # we have it delivered by its receipt, the vendor billed it failed
        {
            "kind": "status_differs",
            "vendor_message_id": "v-2",
            "delivery_id": deliveries["v-2"],
            "line": 3,
            "ours": "delivered",
            "theirs": "failed",
        },
        # three segments at 0.05 is what we recorded; the vendor charged 0.18
        {
            "kind": "fee_differs",
            "vendor_message_id": "v-3",
            "delivery_id": deliveries["v-3"],
            "line": 4,
            "ours": {"amount": 0.15, "currency": "CNY"},
            "theirs": {"amount": 0.18, "currency": "CNY"},
        },
        # billed, never sent by us
        {
            "kind": "billed_not_sent",
            "vendor_message_id": "v-9",
            "delivery_id": None,
            "line": 6,
            "ours": None,
            "theirs": "delivered",
        },
    ]
    assert answer["counts"] == {"status_differs": 1, "fee_differs": 1, "billed_not_sent": 1}
    entries = (await api.get("/v1/audit", params={"action": "bill.upload"})).json()["entries"]
    assert [(e["subject"], e["detail"]) for e in entries] == [("provider:vendor", {"days": [TODAY], "lines": 5})]


async def test_an_upload_again_replaces_the_day_and_aliyun_headers_are_read(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    deliveries = await sent(api, clarion, vendor_side)
    assert (await upload(api, BILL)).status_code == 201
    # Aliyun's field names, its SendStatus codes (3 delivered, 1 waiting), no fee column, and no line for v-4
    corrected = f"BizId,PhoneNum,SendStatus,计费条数,SendDate\nv-1,8613800138001,3,1,{TODAY} 10:00:01\n"
    corrected += f"v-2,8613800138002,3,1,{TODAY} 10:00:02\nv-3,8613800138003,1,2,{TODAY} 10:00:03\n"
    assert (await upload(api, corrected)).status_code == 201
    answer = await reconciled(api)
    assert answer["theirs"] == {"lines": 3, "delivered": 2, "failed": 0, "segments": 4, "fee": {}}
    assert [
        (d["kind"], d["vendor_message_id"], d["delivery_id"], d["ours"], d["theirs"]) for d in answer["discrepancies"]
    ] == [
        ("segments_differ", "v-3", deliveries["v-3"], 3, 2),
        ("sent_not_billed", "v-4", deliveries["v-4"], "sent", None),
    ]
    # another day has neither side
    empty = await reconciled(api, day="2001-01-01")
    assert (empty["ours"]["sent"], empty["theirs"]["lines"], empty["discrepancies"]) == (0, 0, [])


@pytest.mark.parametrize(
    ("bill", "line", "column"),
    [
        ("message_id,status\nv-1,success\nv-2\n", 3, "line"),
        ("message_id,status,segments\nv-1,success,1\nv-2,success,two\n", 3, "segments"),
        ("message_id,status,fee\nv-1,success,-0.05\n", 2, "fee"),
        ("message_id,status\nv-1,lost\n", 2, "status"),
        ("message_id,status\n,success\n", 2, "vendor_message_id"),
        ("message_id,status,sent_at\nv-1,success,yesterday\n", 2, "sent_at"),
        ("phone,status\n+8613800138001,success\n", 1, "vendor_message_id"),
        ("", 1, "header"),
    ],
)
async def test_a_malformed_bill_is_422_naming_the_line_and_nothing_is_stored(
    api: httpx.AsyncClient, bill: str, line: int, column: str
) -> None:
    await put_provider(api, "vendor", "sms", "file", {"prices": PRICES})
    response = await upload(api, bill, day=TODAY)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_bill"
    assert (error["details"][0]["line"], error["details"][0]["column"]) == (line, column)
    assert error["message"].startswith(f"line {line}: {column}: ")
    assert (await reconciled(api))["theirs"]["lines"] == 0


async def test_a_bill_without_dates_needs_the_day_and_an_unknown_account_is_404(api: httpx.AsyncClient) -> None:
    await put_provider(api, "vendor", "sms", "file", {"prices": PRICES})
    undated = await upload(api, "message_id,status\nv-1,success\n")
    assert undated.status_code == 422 and undated.json()["error"]["details"][0]["column"] == "sent_at"
    dated = await upload(api, "message_id,status\nv-1,success\n", day=TODAY)
    assert dated.status_code == 201 and dated.json()["days"] == [TODAY]
    assert (await upload(api, "message_id,status\n", provider="nobody")).status_code == 404
    assert (await api.get("/v1/reconciliation/nobody", params={"day": TODAY})).status_code == 404
    as_json = await api.post("/v1/reconciliation/vendor", json={"lines": []})
    assert as_json.status_code == 415
