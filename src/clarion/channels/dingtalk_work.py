"""DingTalk work notifications (工作通知): an internal app's message to one user, by DingTalk userid.

The app's access token comes from ``GET /gettoken?appkey=&appsecret=`` (valid ``expires_in`` seconds, two hours)
and is shared through ``context.tokens``; a send answered 40014 (invalid token), 42001 (expired), or 88 with one
of those as ``sub_code`` (the newer gateway's wrapping), drops that token and is made once more with a new one.

``asyncsend_v2`` answers a ``task_id`` (the provider message id) before DingTalk has delivered anything: whether
the user got it is learned by polling ``getsendresult`` for the task (``poll_receipts``). A userid DingTalk
does not know is not refused at send time either; it comes back in the task's ``invalid_user_id_list``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import httpx
from pydantic import Field, field_validator

from clarion.channels import outbound, vendor
from clarion.channels.base import ProviderConfig
from clarion.channels.dingtalk_robot import Verdict, markdown_of, post_json, read_answer, vendor_error
from clarion.channels.webhook import send_to, transport_error
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError
from clarion.domain.model import Channel, Outgoing, SendResult

#: DingTalk server-API ``errcode`` → what it means (any other non-zero code is permanent)
ERRORS: dict[int, Verdict] = {
    40089: "misconfigured",  # invalid appkey or appsecret
    40078: "misconfigured",  # the app's credentials are not (or no longer) valid
    60011: "misconfigured",  # the app has no permission for work notifications
    60020: "misconfigured",  # the calling IP is not on the app's allow-list
    40001: "misconfigured",  # the appsecret is wrong
    -1: "transient",  # DingTalk is busy
    90018: "transient",  # the app calls too often
    90002: "transient",  # too many calls in this second
    40035: "permanent",  # a parameter is missing or invalid
    40000: "permanent",  # invalid agent_id or userid
}
#: the codes that mean "this access token is not (or no longer) valid": refreshed once
TOKEN_CODES = frozenset({40014, 42001})
#: the newer gateway's code wrapping a sub_code (``"sub_code": "40014"``)
WRAPPED = 88

#: ``getsendresult``'s lists → what each says of the user (``unread``: it is in their work notifications)
LISTS: dict[str, receipts.Event] = {
    "read_user_id_list": receipts.Event.READ,
    "unread_user_id_list": receipts.Event.DELIVERED,
    "invalid_user_id_list": receipts.Event.UNDELIVERED,
    "forbidden_user_id_list": receipts.Event.UNDELIVERED,
    "failed_user_id_list": receipts.Event.UNDELIVERED,
}


def errcode_of(answer: dict[str, Any]) -> int:
    """The answer's code, the wrapped ``sub_code`` when the gateway wrapped one (0: no error)."""
    code = _int(answer.get("errcode", 0))
    if code == WRAPPED and _int(answer.get("sub_code")) is not None:
        return _int(answer.get("sub_code")) or code
    return code if code is not None else -2


def token_refused(answer: dict[str, Any]) -> bool:
    """Whether DingTalk's answer says the access token is invalid or expired (refreshed once)."""
    return errcode_of(answer) in TOKEN_CODES


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class DingTalkWorkProvider:
    """Sends the delivery's markdown as a work notification from the configured app (agent)."""

    kind: ClassVar[str] = "dingtalk_work"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.DINGTALK})
    uses_context: ClassVar[bool] = True

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"app_secret"})
        destination_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})

        app_key: str = Field(min_length=1, max_length=200)
        app_secret: str = Field(min_length=1, max_length=500)
        #: the app's AgentId, from the developer console
        agent_id: int = Field(gt=0)
        endpoint: str = "https://oapi.dingtalk.com"
        timeout: float = Field(default=10, gt=0, le=120)
        allow_private_networks: bool = False

        @field_validator("endpoint")
        @classmethod
        def _http_url(cls, value: str) -> str:
            return outbound.endpoint(value)

    def __init__(
        self, config: DingTalkWorkProvider.Config, *, name: str, context: vendor.ProviderContext | None = None
    ) -> None:
        self.config = config
        self.name = name
        self.context = context or vendor.ProviderContext()
        self._token_key = vendor.token_key("dingtalk", config.app_key, secret=config.app_secret)
        self._client = outbound.client(
            timeout=config.timeout, allow_private_networks=config.allow_private_networks, http2=True
        )

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        allow = self.config.allow_private_networks
        return await send_to(self.config.endpoint, batch, self._send_one, allow_private_networks=allow)

    async def _fetch_token(self) -> tuple[str, float]:
        config = self.config
        params = {"appkey": config.app_key, "appsecret": config.app_secret}
        try:
            response = await self._client.get(f"{config.endpoint}/gettoken", params=params)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise transport_error(exc) from None
        answer = read_answer(response)
        code = errcode_of(answer)
        if code != 0 or not answer.get("access_token"):
            raise vendor_error(code, f"gettoken: {answer.get('errmsg', '')}", ERRORS)
        return str(answer["access_token"]), float(answer.get("expires_in") or 7200)

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to a server API with the app's token, refreshed once when DingTalk says it is no longer valid."""
        url = f"{self.config.endpoint}{path}"

        async def post(token: str) -> dict[str, Any]:
            return await post_json(self._client, url, self.config.timeout, params={"access_token": token}, json=body)

        answer = await self.context.tokens.call_with_token(
            self._token_key, self._fetch_token, post, expired=token_refused
        )
        code = errcode_of(answer)
        if code != 0:
            message = str(answer.get("sub_msg") or answer.get("errmsg", ""))
            raise vendor_error(code, message, ERRORS)
        return answer

    async def _send_one(self, item: Outgoing) -> SendResult:
        userid = item.address
        if not isinstance(userid, str) or not userid or "," in userid:
            raise PermanentSendError(f"not a DingTalk userid: {userid!r}", code="invalid_address")
        title, text = markdown_of(item)
        body = {
            "agent_id": self.config.agent_id,
            "userid_list": userid,
            "msg": {"msgtype": "markdown", "markdown": {"title": title, "text": text}},
        }
        answer = await self._call("/topapi/message/corpconversation/asyncsend_v2", body)
        task_id = answer.get("task_id")
        if task_id in (None, ""):
            raise PermanentSendError(f"DingTalk answered no task_id: {answer}"[:300], code="invalid_response")
        return SendResult(item.delivery_id, provider_message_id=str(task_id))

    async def poll_receipts(self, provider_message_ids: Sequence[str]) -> list[receipts.Receipt]:
        """What DingTalk knows of each task (one user each): read, in the user's notifications, or not reached.
        A task with its user in no list yet is still being sent and gives nothing; a task id DingTalk refuses
        raises, so the poller can tell a failed poll from "nothing new"."""
        found: list[receipts.Receipt] = []
        for task_id in provider_message_ids:
            body = {"agent_id": self.config.agent_id, "task_id": _int(task_id) or task_id}
            answer = await self._call("/topapi/message/corpconversation/getsendresult", body)
            result = answer.get("send_result") or {}
            for name, event in LISTS.items():
                users = result.get(name) or []
                if users:
                    vendor_status = name.removesuffix("_user_id_list")
                    reason = f"DingTalk task {task_id}: {vendor_status}"
                    found.append(receipts.Receipt(str(task_id), event, reason, {"vendor_status": vendor_status}))
                    break
        return found

    async def close(self) -> None:
        await self._client.aclose()
