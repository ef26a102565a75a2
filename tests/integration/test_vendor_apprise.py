"""The Apprise provider against a loopback service Apprise notifies (tests/fakes/apprise_target.py, its
``json://`` protocol with HTTP Basic credentials): what arrives per channel, each failure path, the SSRF check
before Apprise connects, the account's validation and the probe endpoint."""

from __future__ import annotations

from typing import Any

import httpx
import pydantic
import pytest

from clarion.channels import base, masking
from clarion.channels.apprise_kind import AppriseProvider, own_host, plugin_for
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.fakes.apprise_target import PASSWORD, FakeAppriseTarget


def provider(url: str, **config: Any) -> AppriseProvider:
    resolve = config.pop("resolve", None)
    options = {"url": url, "allow_private_networks": True, "timeout": 5, **config}
    return AppriseProvider(AppriseProvider.Config(**options), name="team-chat", resolve=resolve)


def outgoing(channel: Channel, content: dict[str, Any], address: Any = "someone", n: int = 1) -> Outgoing:
    return Outgoing(f"dlv-{n}", f"msg-{n}", f"u{n}", channel, address, content)


PUSH = {"title": "Disk almost full", "body": "db-1 is at 95%", "url": "https://status.example.com/db-1"}


async def test_a_push_is_notified_with_title_body_and_link_and_stays_sent() -> None:
    async with FakeAppriseTarget() as target:
        [result] = await provider(target.url()).send([outgoing(Channel.PUSH, PUSH)])
    assert result.error is None
    assert (result.provider_message_id, result.status) == ("dlv-1", None)  # no receipt will follow: it stays sent
    [note] = target.notifications
    assert (note["path"], note["title"], note["type"]) == ("/hook", "Disk almost full", "info")
    assert note["message"] == "db-1 is at 95%\nhttps://status.example.com/db-1"


async def test_chat_markdown_and_sms_text_are_notified_as_their_content() -> None:
    async with FakeAppriseTarget() as target:
        sender = provider(target.url())
        results = await sender.send(
            [
                outgoing(Channel.FEISHU, {"title": "Deploy", "markdown": "**v2.1** is live"}, n=1),
                outgoing(Channel.SMS, {"text": "【Clarion】code 4711"}, n=2),
            ]
        )
    assert [r.error for r in results] == [None, None]
    by_title = {n["title"]: n["message"] for n in target.notifications}
    assert "v2.1" in by_title["Deploy"] and by_title[""] == "【Clarion】code 4711"


async def test_the_address_is_put_percent_encoded_where_the_url_says() -> None:
    async with FakeAppriseTarget() as target:
        sender = provider(target.url("/users/{address}"))
        [result] = await sender.send([outgoing(Channel.SMS, {"text": "hi"}, address="+86 138/../x?y=1")])
        [missing] = await sender.send([outgoing(Channel.SMS, {"text": "hi"}, address=None, n=2)])
    assert result.error is None
    # the address stays one path segment: it cannot climb the path or add a query
    assert [n["path"] for n in target.notifications] == ["/users/+86%20138%2F..%2Fx%3Fy=1"]
    assert isinstance(missing.error, PermanentSendError) and missing.error.code == "invalid_address"


async def test_a_wrong_password_in_the_url_is_refused_by_the_service_and_transient() -> None:
    async with FakeAppriseTarget() as target:
        [result] = await provider(target.url(password="wrong")).send([outgoing(Channel.PUSH, PUSH)])
    assert isinstance(result.error, TransientSendError) and result.error.code == "apprise_failed"
    assert "401" in result.error.message  # Apprise's own words: it gives no code, so the failure is retried
    assert len(target.requests) == 1 and target.notifications == []


async def test_a_service_error_is_transient_with_apprises_reason() -> None:
    async with FakeAppriseTarget(status=500) as target:
        [result] = await provider(target.url()).send([outgoing(Channel.PUSH, PUSH)])
    assert isinstance(result.error, TransientSendError) and result.error.code == "apprise_failed"
    assert "500" in result.error.message


async def test_a_service_slower_than_the_timeout_is_transient() -> None:
    async with FakeAppriseTarget(delay=3) as target:
        [result] = await provider(target.url(), timeout=0.5).send([outgoing(Channel.PUSH, PUSH)])
    assert isinstance(result.error, TransientSendError)
    assert result.error.code in ("apprise_failed", "timeout") and "0.5" in result.error.message


async def test_content_apprise_cannot_send_fails_before_notifying() -> None:
    async with FakeAppriseTarget() as target:
        [result] = await provider(target.url()).send([outgoing(Channel.PUSH, {"subject": "no body"})])
    assert isinstance(result.error, PermanentSendError) and result.error.code == "invalid_content"
    assert target.requests == []


async def test_a_private_host_is_refused_before_apprise_connects() -> None:
    async with FakeAppriseTarget() as target:
        [literal] = await provider(target.url(), allow_private_networks=False).send([outgoing(Channel.PUSH, PUSH)])

        async def internal(host: str, port: int) -> list[str]:
            return ["10.1.2.3"]

        named = provider(
            f"json://{PASSWORD}@ntfy.internal.example:8080/", allow_private_networks=False, resolve=internal
        )
        [by_name] = await named.send([outgoing(Channel.PUSH, PUSH)])
    for result in (literal, by_name):
        assert isinstance(result.error, PermanentSendError) and result.error.code == "url_not_allowed"
    assert target.requests == []


def test_only_operator_hosted_services_have_a_host_to_check() -> None:
    assert own_host(plugin_for("json://example.com:8080/hook")) == ("example.com", 8080)
    assert own_host(plugin_for("ntfys://ntfy.example.com/alerts")) == ("ntfy.example.com", 443)
    assert own_host(plugin_for("tgram://123456789:abcdefg_hijklmnop/12315544/")) is None  # api.telegram.org
    assert own_host(plugin_for("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js")) is None
    assert own_host(plugin_for("ntfy://alerts")) is None  # ntfy.sh


def test_the_config_needs_a_url_apprise_knows_and_masks_it_whole() -> None:
    with pytest.raises(pydantic.ValidationError) as unknown:
        AppriseProvider.Config(url="nosuchservice://token")
    assert unknown.value.errors()[0]["loc"] == ("url",)
    with pytest.raises(pydantic.ValidationError) as typo:
        AppriseProvider.Config(url="json://example.com", urls="x")
    assert typo.value.errors()[0]["loc"] == ("urls",)
    shown = masking.mask(AppriseProvider.Config, {"url": "tgram://123456789:secret/42", "timeout": 5})
    assert shown == {"url": base.MASK, "timeout": 5}


# -- through the API ----------------------------------------------------------------------------------------


async def test_saving_an_account_with_an_unknown_url_names_config_url(api: httpx.AsyncClient) -> None:
    body = {"channel": "push", "kind": "apprise", "config": {"url": "nosuchservice://token"}}
    response = await api.put("/v1/providers/team-chat", json=body)
    assert response.status_code == 422, response.text
    assert "config.url" in response.text
    wrong_channel = {"channel": "webhook", "kind": "apprise", "config": {"url": "json://example.com"}}
    assert (await api.put("/v1/providers/team-chat", json=wrong_channel)).status_code == 422


async def test_the_probe_notifies_through_the_account_and_reports_the_failure(api: httpx.AsyncClient) -> None:
    async with FakeAppriseTarget() as target:
        config = {"url": target.url(), "allow_private_networks": True, "timeout": 5}
        saved = await api.put(
            "/v1/providers/team-chat", json={"channel": "feishu", "kind": "apprise", "config": config}
        )
        assert saved.status_code in (200, 201), saved.text
        assert saved.json()["config"]["url"] == base.MASK
        probe = await api.post("/v1/providers/team-chat/test", json={"address": "ops"})
        target.status = 503
        failed = await api.post("/v1/providers/team-chat/test", json={"address": "ops"})
    assert probe.status_code == 200 and probe.json()["ok"] is True, probe.text
    assert target.notifications[0]["title"] == "Clarion test"
    answer = failed.json()
    assert answer["ok"] is False and answer["error"]["code"] == "apprise_failed" and answer["error"]["transient"]
