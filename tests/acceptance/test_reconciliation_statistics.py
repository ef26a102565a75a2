"""Reconciliation from the vendors' statistics APIs, on SQLite and PostgreSQL: SMS sent through Aliyun, Tencent and
Twilio on loopback (each fake checks the request's signature or credentials, statistics calls included), the
vendor's daily counts set with three discrepancies, ``POST /v1/reconciliation/{provider}:fetch?day=`` asks the
vendor and keeps them, and ``GET /v1/reconciliation/{provider}?day=`` lists exactly those three differences
beside what a CSV bill shows. A kind without a statistics API is 422, an unknown account 404, a vendor that
refuses 502 with its message; each fetch is in the audit log, and a fetch again replaces the day."""

from __future__ import annotations

import asyncio
import getpass
import json
import threading
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from clarion import bootstrap, cli
from clarion.api.app import create_app
from clarion.settings import Settings
from clarion.store import audit
from tests.acceptance.test_e2e_channels import message, put_provider, send_one
from tests.acceptance.test_e2e_sms_vendors import TOKEN, aliyun_config, code_template, tencent_config, twilio_config
from tests.conftest import API_KEY, drain, put_user
from tests.fakes.aliyun import FakeAliyunSms, sms_report
from tests.fakes.tencent import FakeTencentSms, status_report
from tests.fakes.twilio import FakeTwilio

BEIJING = timezone(timedelta(hours=8))
#: the vendor's day of a delivery sent now: China time for Aliyun and Tencent, GMT for Twilio


def _today(zone: tzinfo) -> date:
    """Today in ``zone``, taken when a test starts (a module-level value would be yesterday for a test run after
    that zone's midnight)."""
    return datetime.now(zone).date()


CNY = {"currency": "CNY", "unit": "segment", "default": 0.045}
USD = {"currency": "USD", "unit": "segment", "default": 0.0083}
runner = CliRunner()


@pytest.fixture
async def vendor_side(clarion: bootstrap.Clarion) -> AsyncIterator[httpx.AsyncClient]:
    """The API as a vendor calls it: no API key."""
    transport = httpx.ASGITransport(app=create_app(clarion=clarion))
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as client:
        yield client


async def send_three(api: httpx.AsyncClient, clarion: bootstrap.Clarion, phones: list[str]) -> list[dict[str, Any]]:
    """One verification SMS to each of ``phones`` (users u1, u2, u3), drained; their deliveries, all ``sent``."""
    await code_template(api)
    deliveries = []
    for n, phone in enumerate(phones, start=1):
        await put_user(api, f"u{n}", addresses={"sms": phone})
        message_id = await send_one(api, "code", f"u{n}", {"code": f"47{n:02d}", "minutes": "5"})
        assert await drain(clarion) == 1
        [delivery] = (await message(api, message_id))["deliveries"]
        assert delivery["status"] == "sent", delivery
        deliveries.append(delivery)
    return deliveries


async def fetch(api: httpx.AsyncClient, provider: str, day: Any) -> httpx.Response:
    return await api.post(f"/v1/reconciliation/{provider}:fetch", params={"day": str(day)})


async def reconciled(api: httpx.AsyncClient, provider: str, day: Any) -> dict[str, Any]:
    response = await api.get(f"/v1/reconciliation/{provider}", params={"day": str(day)})
    assert response.status_code == 200, response.text
    return response.json()


async def audited(api: httpx.AsyncClient) -> list[tuple[str, dict[str, Any]]]:
    entries = (await api.get("/v1/audit", params={"action": "statistics.fetch"})).json()["entries"]
    return [(e["subject"], e["detail"]) for e in entries]


def fields(statistics: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    return [(d["field"], d["ours"], d["theirs"], d["difference"]) for d in statistics["differences"]]


async def test_aliyun_statistics_of_the_china_day_show_exactly_the_three_differences(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    china_day = _today(BEIJING)
    phones = ["+8613800138001", "+8613800138002", "+8613800138003"]
    async with FakeAliyunSms() as fake:
        await put_provider(api, "aliyun-a", "sms", "aliyun_sms", aliyun_config(fake.url, prices=CNY))
        await send_three(api, clarion, phones)
        for sent, success in zip(fake.sent, (True, True, False), strict=True):
            report = sms_report(sent.biz_id, sent.form["PhoneNumbers"], success=success)
            taken = await vendor_side.post(f"/r/aliyun-a?token={TOKEN}", content=report)
            assert taken.json()["accepted"] == 1, taken.text
        # ours: 3 sent, 2 delivered, 1 failed. Aliyun: one more sent (one of them abroad), one fewer delivered,
        # one more failed; counts of other days are not the day's
        day = china_day.strftime("%Y%m%d")
        fake.set_statistics(day, total=3, success=1, fail=2)
        fake.set_statistics(day, total=1, success=0, fail=0, waiting=1, globe="2")
        fake.set_statistics((china_day - timedelta(days=1)).strftime("%Y%m%d"), total=50, success=50, fail=0)
        fetched = await fetch(api, "aliyun-a", china_day)
        asked = [f for f in fake.forms if f["Action"] == "QuerySendStatistics"]
    assert fetched.status_code == 200, fetched.text
    assert [(f["IsGlobe"], f["StartDate"], f["EndDate"], f["PageIndex"]) for f in asked] == [
        ("1", day, day, "1"),
        ("2", day, day, "1"),
    ]
    statistics = (await reconciled(api, "aliyun-a", china_day))["statistics"]
    assert statistics == fetched.json()
    assert (statistics["day"], statistics["zone"]) == (china_day.isoformat(), "+08:00")
    assert (
        statistics["start"]
        == (datetime(china_day.year, china_day.month, china_day.day) - timedelta(hours=8))
        .replace(tzinfo=UTC)
        .isoformat()
    )
    assert statistics["ours"] == {"sent": 3, "delivered": 2, "failed": 1, "segments": 3, "cost": {"CNY": 0.135}}
    theirs = statistics["theirs"]
    assert (theirs["sent"], theirs["delivered"], theirs["failed"], theirs["billed_segments"]) == (4, 1, 2, None)
    assert theirs["reported"]["QuerySendStatistics"]["NoRespondedCount"] == 1
    assert fields(statistics) == [("sent", 3, 4, 1), ("delivered", 2, 1, -1), ("failed", 1, 2, 1)]
    assert [n["field"] for n in statistics["not_compared"]] == ["billed_segments", "fee"]
    assert await audited(api) == [
        (
            "provider:aliyun-a",
            {
                "day": china_day.isoformat(),
                "zone": "+08:00",
                "sent": 4,
                "delivered": 1,
                "failed": 2,
                "billed_segments": None,
                "fee": None,
                "currency": None,
            },
        )
    ]


async def test_tencent_statistics_compare_billed_segments_and_a_fetch_again_replaces_the_day(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion, vendor_side: httpx.AsyncClient
) -> None:
    china_day = _today(BEIJING)
    phones = ["+8613800138001", "+8613800138002", "+8613800138003"]
    async with FakeTencentSms() as fake:
        await put_provider(api, "tencent-a", "sms", "tencent_sms", tencent_config(fake.url))
        await send_three(api, clarion, phones)
        for serial, phone in list(fake.serials.items())[:2]:
            taken = await vendor_side.post(
                f"/r/tencent-a?token={TOKEN}", content=status_report(serial, phone, success=True)
            )
            assert taken.json()["accepted"] == 1, taken.text
        # ours: 3 sent, 2 delivered, 1 without a receipt, 3 segments. Tencent: one more taken, one fewer
        # delivered, five segments billed
        day = china_day.strftime("%Y%m%d")
        fake.set_statistics(day, requested=5, taken=4, fee_count=5, delivered=1, failed=0)
        first = await fetch(api, "tencent-a", china_day)
        assert first.status_code == 200, first.text
        assert fields(first.json()) == [("sent", 3, 4, 1), ("delivered", 2, 1, -1), ("billed_segments", 3, 5, 2)]
        assert [n["field"] for n in first.json()["not_compared"]] == ["fee"]
        assert first.json()["theirs"]["reported"]["SendStatusStatistics"]["RequestCount"] == 5

        fake.set_statistics(day, requested=3, taken=3, fee_count=3, delivered=2, failed=0)
        again = await fetch(api, "tencent-a", china_day)
    assert again.status_code == 200, again.text
    answer = await reconciled(api, "tencent-a", china_day)
    assert answer["statistics"]["differences"] == []
    assert answer["statistics"]["theirs"]["sent"] == 3
    assert answer["theirs"]["lines"] == 0  # no bill uploaded: the CSV side stays as it was
    assert [detail["sent"] for _, detail in await audited(api)] == [3, 4]  # newest first


async def test_twilio_usage_records_compare_sent_segments_and_fee_not_delivery(
    api: httpx.AsyncClient, clarion: bootstrap.Clarion
) -> None:
    utc_day = _today(UTC)
    phones = ["+14155550101", "+14155550102", "+14155550103"]
    async with FakeTwilio() as fake:
        await put_provider(api, "twilio-a", "sms", "twilio", twilio_config(fake.url, prices=USD))
        await send_three(api, clarion, phones)
        # ours: 3 messages, 3 segments, 0.0249 USD. Twilio: 4 messages, 6 segments, 0.0498 USD
        fake.set_usage(utc_day.isoformat(), count=4, segments=6, price="0.0498")
        fake.set_usage(utc_day.isoformat(), count=9, segments=9, price="1.0", category="calls")
        fetched = await fetch(api, "twilio-a", utc_day)
    assert fetched.status_code == 200, fetched.text
    [asked] = [r for r in fake.received if r.method == "GET"]
    assert asked.query == {"Category": "sms-outbound", "StartDate": str(utc_day), "EndDate": str(utc_day)}
    statistics = (await reconciled(api, "twilio-a", utc_day))["statistics"]
    assert statistics["zone"] == "+00:00"
    assert (statistics["theirs"]["fee"], statistics["theirs"]["currency"]) == (0.0498, "USD")
    assert [
        (d["field"], d["ours"], d["theirs"], d["difference"], d["currency"]) for d in statistics["differences"]
    ] == [
        ("sent", 3, 4, 1, None),
        ("billed_segments", 3, 6, 3, None),
        ("fee", 0.0249, 0.0498, 0.0249, "USD"),
    ]
    assert [n["field"] for n in statistics["not_compared"]] == ["delivered", "failed"]


async def test_a_kind_without_statistics_is_422_an_unknown_account_404_and_a_refusing_vendor_502(
    api: httpx.AsyncClient,
) -> None:
    china_day = _today(BEIJING)
    utc_day = _today(UTC)
    await put_provider(api, "filed", "sms", "file", {})
    plain = await fetch(api, "filed", utc_day)
    assert plain.status_code == 422, plain.text
    assert plain.json()["error"]["code"] == "no_statistics"
    assert "'file'" in plain.json()["error"]["message"]
    assert (await fetch(api, "nobody", utc_day)).status_code == 404
    assert (await fetch(api, "filed", "2026-13-01")).status_code == 422
    assert (await fetch(api, "filed", utc_day + timedelta(days=3))).json()["error"]["details"][0]["field"] == "day"

    async with FakeAliyunSms() as ali, FakeTencentSms() as ten:
        await put_provider(api, "aliyun-a", "sms", "aliyun_sms", aliyun_config(ali.url))
        await put_provider(api, "tencent-a", "sms", "tencent_sms", tencent_config(ten.url, secret_key="not-the-key"))
        ali.fail_next("Throttling.User", "Request was denied due to user flow control.")
        throttled = await fetch(api, "aliyun-a", china_day)
        wrongly_signed = await fetch(api, "tencent-a", china_day)
    assert throttled.status_code == 502, throttled.text
    error = throttled.json()["error"]
    assert (error["code"], error["details"]["vendor_code"]) == ("vendor_error", "Throttling.User")
    assert "Request was denied due to user flow control." in error["message"]
    assert wrongly_signed.status_code == 502
    assert wrongly_signed.json()["error"]["details"]["vendor_code"] == "AuthFailure.SignatureFailure"
    assert (await reconciled(api, "aliyun-a", china_day))["statistics"] is None
    assert await audited(api) == []


async def test_fetching_needs_admin(api: httpx.AsyncClient, clarion: bootstrap.Clarion) -> None:
    utc_day = _today(UTC)
    await clarion.keys.create("ed", ("editor",), key="clk_ed_the_editor_000000000000000")
    async with FakeTwilio() as fake:
        await put_provider(api, "twilio-a", "sms", "twilio", twilio_config(fake.url))
        refused = await api.post(
            "/v1/reconciliation/twilio-a:fetch",
            params={"day": str(utc_day)},
            headers={"Authorization": "Bearer clk_ed_the_editor_000000000000000"},
        )
    assert refused.status_code == 403, refused.text
    assert fake.received == []
    assert await audited(api) == []


# -- the command line ----------------------------------------------------------------------------------------------


class FakeInThread:
    """A fake vendor served from its own event loop in a thread, so a synchronous CLI run (``asyncio.run``) can
    call it."""

    def __init__(self, fake: FakeTwilio) -> None:
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeTwilio:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.__aenter__(), self.loop).result(10)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.__aexit__(None, None, None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("CLARION_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("CLARION_OUTBOX_DIR", str(tmp_path / "var" / "outbox"))
    monkeypatch.setenv("CLARION_SECRET_KEY", "cli-secret")
    monkeypatch.setenv("CLARION_API_KEY", API_KEY)
    assert runner.invoke(cli.app, ["migrate"]).exit_code == 0


def _put_twilio(url: str) -> None:
    async def put() -> None:
        services = bootstrap.build(Settings())
        await services.start(workers=0)
        try:
            transport = httpx.ASGITransport(app=create_app(clarion=services))
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://c.test", headers=headers) as api:
                await put_provider(api, "twilio-a", "sms", "twilio", twilio_config(url, prices=USD))
                await put_provider(api, "filed", "sms", "file", {})
        finally:
            await services.close()

    asyncio.run(put())


def test_clarion_reconcile_fetch_prints_the_comparison_and_exits_3_on_differences(cli_env: None) -> None:
    utc_day = _today(UTC)
    with FakeInThread(FakeTwilio()) as fake:
        _put_twilio(fake.url)
        fake.set_usage(utc_day.isoformat(), count=2, segments=3, price="0.0249")
        as_json = runner.invoke(cli.app, ["reconcile", "fetch", "twilio-a", "--day", str(utc_day), "--json"])
        fake.set_usage(utc_day.isoformat(), count=0, segments=0, price="0")
        agreed = runner.invoke(cli.app, ["reconcile", "fetch", "twilio-a", "--day", str(utc_day), "--as", "ops"])
    assert as_json.exit_code == 3, as_json.output
    shown = json.loads(as_json.stdout)
    assert [(d["field"], d["ours"], d["theirs"]) for d in shown["differences"]] == [
        ("sent", 0, 2),
        ("billed_segments", 0, 3),
        ("fee", 0, 0.0249),
    ]
    assert agreed.exit_code == 0, agreed.output
    assert "agrees" in agreed.stdout and "not reported" in agreed.stdout
    unknown = runner.invoke(cli.app, ["reconcile", "fetch", "nobody", "--day", str(utc_day)])
    plain = runner.invoke(cli.app, ["reconcile", "fetch", "filed", "--day", str(utc_day)])
    assert (unknown.exit_code, plain.exit_code) == (2, 2)
    assert "has no statistics API" in plain.output

    async def actors() -> list[str | None]:
        services = bootstrap.build(Settings())
        try:
            async with services.db.read() as conn:
                rows = await conn.execute(sa.select(audit.LOG.c.actor).where(audit.LOG.c.action == "statistics.fetch"))
                return sorted(rows.scalars())
        finally:
            await services.close()

    assert asyncio.run(actors()) == ["cli:" + getpass.getuser(), "ops"]
