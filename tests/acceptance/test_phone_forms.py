"""Phones are held in one form, E.164, wherever they are written: a user's number, a suppression, an ID list.
A number typed in national form (``13912345678``, ``0086 139 1234 5678``) is converted under the operator's
default country (``CLARION_DEFAULT_REGION``) or refused with a 422 — never stored in a form that can never match,
which would let the next SMS to ``+8613912345678`` through a suppression answered 201."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from clarion import bootstrap
from clarion.api.app import create_app
from clarion.settings import Settings
from tests.conftest import API_KEY, put_template, put_user

E164 = "+8613912345678"


@pytest.fixture
async def api_cn(settings: Settings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    services = bootstrap.build(settings.model_copy(update={"default_region": "CN"}))
    await services.start(workers=0)
    transport = httpx.ASGITransport(app=create_app(clarion=services))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test", headers=headers) as client:
        yield client
    await services.close()


async def test_a_suppression_typed_in_national_form_stops_the_sms_to_its_e164_number(api_cn) -> None:
    await put_user(api_cn, "u1", addresses={"sms": "139 1234 5678"})
    assert (await api_cn.get("/v1/users/u1")).json()["addresses"]["sms"] == E164
    created = await api_cn.post("/v1/suppressions", json={"address": "13912345678", "source": "admin"})
    assert created.status_code == 201, created.text
    assert created.json()["address"] == E164
    again = await api_cn.post("/v1/suppressions", json={"address": "0086 139 1234 5678", "source": "admin"})
    assert (again.status_code, again.json()["address"]) == (200, E164)  # the same suppression
    found = (await api_cn.get("/v1/suppressions", params={"address": "13912345678"})).json()["suppressions"]
    assert [s["address"] for s in found] == [E164]

    await put_template(api_cn, "notice", category="notification", channels={"sms": {"text": "news"}})
    sent = await api_cn.post("/v1/messages", json={"template": "notice", "to": "u1"})
    [message] = sent.json()["messages"]
    assert message["status"] == "filtered", message


async def test_without_a_default_country_a_national_number_is_refused_naming_the_field(api) -> None:
    refused = await api.post("/v1/suppressions", json={"address": "13912345678"})
    assert refused.status_code == 422, refused.text
    assert "address" in refused.text and "CLARION_DEFAULT_REGION" in refused.text
    user = await api.put("/v1/users/u1", json={"addresses": {"sms": "13912345678"}})
    assert user.status_code == 422 and "sms" in user.text
    listed = await api.get("/v1/suppressions", params={"address": "13912345678"})
    assert listed.status_code == 422


async def test_non_phone_addresses_are_kept_as_written(api) -> None:
    mail = await api.post("/v1/suppressions", json={"address": "Someone@Example.com"})
    token = await api.post("/v1/suppressions", json={"address": "fcm:APA91bH-1234567890"})
    assert mail.status_code == 201 and token.status_code == 201
    assert token.json()["address"] == "fcm:APA91bH-1234567890"
