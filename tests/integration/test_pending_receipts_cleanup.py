"""Receipts kept pending because no delivery carried their id are deleted after ``pending_receipt_days``.

A receipt that beats the send's outcome is kept and applied when the outcome is written; one that never meets a
delivery (an id Clarion never sent, a send never recorded) would stay forever. The receipt poller's round
forgets those older than the retention, whether or not any account is polled.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.store import tables as t
from tests.acceptance.test_e2e_channels import message, put_provider, send_one
from tests.conftest import drain, put_template, put_user
from tests.integration.loopback import LoopbackServer, Reply

SECRET = "vendor-receipt-key-0123456789"
RECEIPTS = {
    "verify": "hmac",
    "signature_header": "X-Vendor-Signature",
    "id_path": "msgid",
    "status_path": "stat",
    "delivered": ["DELIVRD"],
    "undelivered": ["UNDELIV"],
}


@pytest.fixture
async def vendor_side(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """The API as a vendor calls it: no API key."""
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


async def post_receipt(vendor_side: httpx.AsyncClient, document: Any) -> dict[str, int]:
    body = orjson.dumps(document)
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Vendor-Signature": signature}
    answer = await vendor_side.post("/r/vendor", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    result: dict[str, int] = answer.json()
    return result


async def kept(clarion: bootstrap.Clarion) -> list[str]:
    async with clarion.db.read() as conn:
        rows = (await conn.execute(sa.select(t.receipts.c.provider_message_id).order_by(t.receipts.c.id))).all()
    return [row[0] for row in rows]


def later(clarion: bootstrap.Clarion, delta: timedelta) -> None:
    real = clarion.dispatcher.clock
    clarion.dispatcher.clock = lambda: real() + delta


async def vendor_account(api: httpx.AsyncClient, url: str) -> None:
    config = {
        "url": f"{url}/send",
        "allow_private_networks": True,
        "message_id_path": "data.id",
        "receipts": RECEIPTS,
        "receipt_secret": SECRET,
    }
    await put_provider(api, "vendor", "sms", "sms_http", config)


async def test_a_receipt_no_delivery_ever_names_is_deleted_after_the_retention(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    await vendor_account(api, "http://127.0.0.1:9")
    answer = await post_receipt(vendor_side, {"msgid": "v-lost", "stat": "DELIVRD"})
    assert answer == {"accepted": 0, "pending": 1, "ignored": 0}
    assert clarion.poller is not None and clarion.settings.pending_receipt_days == 7

    later(clarion, timedelta(days=6, hours=23))
    assert (await clarion.poller.run_once()).forgotten == 0
    assert await kept(clarion) == ["v-lost"]

    later(clarion, timedelta(days=7, minutes=1))
    assert (await clarion.poller.run_once()).forgotten == 1
    assert await kept(clarion) == []


async def test_only_receipts_older_than_the_retention_are_deleted_and_a_younger_one_still_applies(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    await vendor_account(api, "http://127.0.0.1:9")
    await post_receipt(vendor_side, {"msgid": "v-old", "stat": "DELIVRD"})
    assert clarion.poller is not None
    clarion.poller.retention = timedelta(seconds=0)
    later(clarion, timedelta(seconds=1))
    assert (await clarion.poller.run_once()).forgotten == 1

    clarion.poller.retention = timedelta(days=7)
    await post_receipt(vendor_side, {"msgid": "v-1", "stat": "DELIVRD"})
    assert (await clarion.poller.run_once()).forgotten == 0
    assert await kept(clarion) == ["v-1"]

    # the send naming v-1 is recorded within the retention: the kept receipt applies
    async with LoopbackServer(Reply(200, {"data": {"id": "v-1"}})) as server:
        await vendor_account(api, server.url)
        await put_user(api, "u1", addresses={"sms": "+8613800138000"})
        await put_template(api, "code", category="verification", channels={"sms": {"text": "code {data.code}"}})
        message_id = await send_one(api, "code", "u1", {"code": "1"})
        assert await drain(clarion) == 1
    assert (await message(api, message_id))["status"] == "delivered"
    assert await kept(clarion) == []
