"""``dingtalk_work`` against a fake DingTalk on loopback that issues and checks access tokens and keeps each
task's user in DingTalk's send-result lists."""

from __future__ import annotations

import pytest

from clarion.channels import dingtalk_work, masking, vendor
from clarion.channels.dingtalk_work import DingTalkWorkProvider
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.fakes.dingtalk import AGENT_ID, APP_KEY, APP_SECRET, FakeDingTalk


def app(url: str, context: vendor.ProviderContext | None = None, **config: object) -> DingTalkWorkProvider:
    options = {
        "app_key": APP_KEY,
        "app_secret": APP_SECRET,
        "agent_id": AGENT_ID,
        "endpoint": url,
        "allow_private_networks": True,
        "timeout": 5,
        **config,
    }
    return DingTalkWorkProvider(DingTalkWorkProvider.Config(**options), name="ding", context=context)


def notice(n: int = 1, userid: str = "zhangsan") -> Outgoing:
    return Outgoing(
        delivery_id=f"dlv-{n}",
        message_id=f"msg-{n}",
        user_id=f"u{n}",
        channel=Channel.DINGTALK,
        address=userid,
        content={"title": "审批提醒", "markdown": "### 待审批\n报销单 **#42** 等你处理"},
    )


async def test_a_work_notification_goes_to_the_userid_with_a_fetched_token_and_answers_the_task_id() -> None:
    async with FakeDingTalk() as fake:
        sender = app(fake.url)
        [result] = await sender.send([notice()])
        await sender.close()
    assert result.error is None, result.error
    [task_id] = fake.tasks
    assert result.provider_message_id == str(task_id)
    gettoken, send = fake.requests
    assert (gettoken.method, gettoken.path, gettoken.query) == (
        "GET",
        "/gettoken",
        {"appkey": APP_KEY, "appsecret": APP_SECRET},
    )
    assert send.path == "/topapi/message/corpconversation/asyncsend_v2"
    assert send.query["access_token"] in fake.tokens
    assert send.json() == {
        "agent_id": AGENT_ID,
        "userid_list": "zhangsan",
        "msg": {
            "msgtype": "markdown",
            "markdown": {"title": "审批提醒", "text": "### 待审批\n报销单 **#42** 等你处理"},
        },
    }


async def test_the_token_is_fetched_once_for_many_sends_and_shared_by_accounts_of_one_app() -> None:
    context = vendor.ProviderContext()
    async with FakeDingTalk() as fake:
        first, second = app(fake.url, context), app(fake.url, context)
        results = await first.send([notice(1), notice(2), notice(3)])
        results += await second.send([notice(4, "lisi")])
        await first.close()
        await second.close()
    assert [r.error for r in results] == [None] * 4
    assert fake.tokens_issued == 1 and context.tokens.fetches == 1
    assert len(fake.tasks) == 4


async def test_an_expired_token_is_refreshed_once_and_the_send_made_again() -> None:
    context = vendor.ProviderContext()
    async with FakeDingTalk() as fake:
        sender = app(fake.url, context)
        await sender.send([notice(1)])
        fake.expire_tokens()
        [result] = await sender.send([notice(2)])
        await sender.close()
    assert result.error is None, result.error
    assert fake.tokens_issued == 2
    sends = [r for r in fake.requests if r.path.endswith("asyncsend_v2")]
    assert len(sends) == 3  # the first, the one refused with 42001, its retry
    assert sends[1].query["access_token"] != sends[2].query["access_token"]


async def test_a_token_refused_twice_is_not_retried_forever() -> None:
    async with FakeDingTalk() as fake:
        fake.fail_next_api(40014, "不合法的access_token")
        fake.fail_next_api(40014, "不合法的access_token")
        sender = app(fake.url)
        [result] = await sender.send([notice()])
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == "40014"
    assert fake.tokens_issued == 2
    assert fake.tasks == {}


async def test_a_token_code_wrapped_in_88_is_refreshed_too() -> None:
    async with FakeDingTalk() as fake:
        fake.fail_next_api(88, "wrapped", sub_code="42001", sub_msg="access_token超时")
        sender = app(fake.url)
        [refreshed] = await sender.send([notice(1)])
        fake.fail_next_api(88, "wrapped", sub_code="60011", sub_msg="no permission")
        [refused] = await sender.send([notice(2)])
        await sender.close()
    assert refreshed.error is None, refreshed.error
    assert fake.tokens_issued == 2
    assert isinstance(refused.error, PermanentSendError) and refused.error.misconfigured
    assert refused.error.code == "60011" and "no permission" in refused.error.message


async def test_a_wrong_app_secret_is_misconfigured() -> None:
    async with FakeDingTalk() as fake:
        sender = app(fake.url, app_secret="not-the-secret")
        [result] = await sender.send([notice()])
        await sender.close()
    assert isinstance(result.error, PermanentSendError)
    assert (result.error.code, result.error.misconfigured) == ("40089", True)
    assert "gettoken" in result.error.message


@pytest.mark.parametrize(("errcode", "verdict"), sorted(dingtalk_work.ERRORS.items()))
async def test_every_dingtalk_work_errcode_maps_to_its_verdict(errcode: int, verdict: str) -> None:
    async with FakeDingTalk() as fake:
        fake.fail_next_api(errcode, "vendor says no")
        sender = app(fake.url)
        [result] = await sender.send([notice()])
        await sender.close()
    error = result.error
    assert error is not None and error.code == str(errcode)  # type: ignore[attr-defined]
    assert "vendor says no" in error.message  # type: ignore[attr-defined]
    if verdict == "transient":
        assert isinstance(error, TransientSendError)
    else:
        assert isinstance(error, PermanentSendError)
        assert error.misconfigured is (verdict == "misconfigured")


async def test_poll_receipts_maps_read_unread_and_invalid_users() -> None:
    async with FakeDingTalk() as fake:
        sender = app(fake.url)
        results = await sender.send([notice(1), notice(2, "lisi"), notice(3, "nobody-here")])
        read, unread, invalid = (r.provider_message_id for r in results)
        assert read and unread and invalid
        fake.read(read)
        found = await sender.poll_receipts([read, unread, invalid])
        await sender.close()
    assert [(r.provider_message_id, r.event) for r in found] == [
        (read, receipts.Event.READ),
        (unread, receipts.Event.DELIVERED),
        (invalid, receipts.Event.UNDELIVERED),
    ]
    assert found[2].detail == {"vendor_status": "invalid"}
    assert "invalid" in (found[2].reason or "")
    polls = [r for r in fake.requests if r.path.endswith("getsendresult")]
    assert [p.json() for p in polls] == [{"agent_id": AGENT_ID, "task_id": int(t)} for t in (read, unread, invalid)]


@pytest.mark.parametrize("state", ["forbidden", "failed"])
async def test_poll_receipts_maps_forbidden_and_failed_users_to_undelivered(state: str) -> None:
    async with FakeDingTalk() as fake:
        sender = app(fake.url)
        [result] = await sender.send([notice()])
        assert result.provider_message_id is not None
        fake.tasks[int(result.provider_message_id)].state = state
        [receipt] = await sender.poll_receipts([result.provider_message_id])
        await sender.close()
    assert receipt.event == receipts.Event.UNDELIVERED and receipt.detail == {"vendor_status": state}


async def test_polling_an_unknown_task_raises_the_vendor_error() -> None:
    async with FakeDingTalk() as fake:
        sender = app(fake.url)
        with pytest.raises(PermanentSendError, match="task_id"):
            await sender.poll_receipts(["123"])
        await sender.close()


async def test_an_address_that_is_not_one_userid_fails_before_any_request() -> None:
    async with FakeDingTalk() as fake:
        sender = app(fake.url)
        [result] = await sender.send([notice(1, "zhangsan,lisi")])
        await sender.close()
    assert isinstance(result.error, PermanentSendError) and result.error.code == "invalid_address"
    assert fake.requests == []


def test_the_app_secret_is_masked_and_agent_id_is_checked() -> None:
    config = {"app_key": APP_KEY, "app_secret": APP_SECRET, "agent_id": AGENT_ID}
    assert masking.mask(DingTalkWorkProvider.Config, config)["app_secret"] == masking.MASK
    with pytest.raises(ValueError, match="agent_id"):
        DingTalkWorkProvider.Config(app_key=APP_KEY, app_secret=APP_SECRET, agent_id=0)


async def test_a_changed_app_secret_fetches_a_new_token_for_the_next_send() -> None:
    context = vendor.ProviderContext()  # the registry rebuilds an edited account with the process's context
    new_secret = "ding-test-app-secret-rotated-000"
    async with FakeDingTalk() as fake:
        before = app(fake.url, context)
        await before.send([notice(1)])
        fake.apps[APP_KEY] = new_secret
        after = app(fake.url, context, app_secret=new_secret)
        [result] = await after.send([notice(2)])
        typo = app(fake.url, context, app_secret="not-the-new-secret")
        [refused] = await typo.send([notice(3)])
        for sender in (before, after, typo):
            await sender.close()
    assert result.error is None, result.error
    last = [r for r in fake.requests if r.path.endswith("asyncsend_v2")][-1]
    assert fake.issued_with[last.query["access_token"]] == new_secret
    assert fake.tokens_issued == 2 and context.tokens.fetches == 2
    # a wrong new secret is found at once, not hidden behind a token the old one got
    assert isinstance(refused.error, PermanentSendError) and refused.error.code == "40089"
    assert len(fake.tasks) == 2
