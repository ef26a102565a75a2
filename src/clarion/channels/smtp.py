"""E-mail over SMTP (aiosmtplib): one connection per batch, one transaction per delivery.

The delivery id becomes the ``Message-ID`` (``<delivery_id@sender-domain>``) and a ``Clarion-Delivery-Id``
header, so a re-send after a crash carries the same id and receiving systems can drop the duplicate.
``content["headers"]`` may add the mailing-list headers (``List-Unsubscribe`` and its RFC 8058 one-click
``List-Unsubscribe-Post``, ``List-Id``…); no other header can be set that way.

Errors follow SMTP's own split: a 4xx reply is "try again later" (transient), a 5xx reply is a refusal
(permanent) — for that delivery only, the connection stays up for the rest. Losing the connection, a
timeout, or failing to set the session up (connect, TLS, login) leaves every remaining delivery transient:
none of those is the message's fault, and an operator can fix credentials before retries run out. An account
with no username logs in to nothing (a password alone is not a login): a relay that offers no AUTH takes it.

A server accepting a mail leaves its delivery ``sent``. Bounces come back to ``POST /r/{provider_name}/bounces``
from the mail server's bounce pipe (an RFC 3464 report, raw, or its JSON form: see ``dsn``), proven by the
account's ``bounce_token`` (``Authorization: Bearer``, ``X-Clarion-Token`` or ``?token=``). A hard bounce makes
the delivery ``bounced`` and suppresses the address; a soft one goes on the timeline.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime, parseaddr
from typing import Any, ClassVar

import aiosmtplib
from pydantic import Field, field_validator, model_validator

from clarion.channels import base, dsn
from clarion.channels.base import ProviderConfig
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError
from clarion.domain.model import Channel, Outgoing, SendResult

#: failures after which the connection cannot be trusted for the rest of the batch
_CONNECTION_ERRORS = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError, TimeoutError)


#: the headers ``content["headers"]`` may set (RFC 2369, 2919, 8058), by lower-case name
_LIST_HEADERS = {
    name.lower(): name
    for name in (
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "List-Id",
        "List-Help",
        "List-Subscribe",
        "List-Post",
        "List-Owner",
        "List-Archive",
    )
}
_HEADER_LINE_MAX = 998  # RFC 5322 2.1.1, CRLF excluded


class _VerbatimHeader(str):
    """A header value written exactly as given, on one line.

    The e-mail package folds long headers at 78 characters and turns a long word, such as an unsubscribe URL,
    into RFC 2047 encoded-words, which list headers do not allow and mail clients do not decode: the
    one-click button would vanish. A value with a ``name`` is a header object to ``email.policy``, written by
    its own ``fold``; it skips the package's CR/LF check, so ``_list_headers`` admits printable ASCII only.
    """

    name: str

    def __new__(cls, name: str, value: str) -> _VerbatimHeader:
        header = super().__new__(cls, value)
        header.name = name
        return header

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


def _list_headers(headers: Any) -> list[_VerbatimHeader]:
    """``content["headers"]`` as headers to add; ValueError for a header that is not a list header or a value
    that is not one line of printable ASCII."""
    if headers is None:
        return []
    if not isinstance(headers, dict):
        raise ValueError("e-mail 'headers' must be an object of header names to values")
    result: dict[str, _VerbatimHeader] = {}
    for raw_name, value in headers.items():
        name = _LIST_HEADERS.get(str(raw_name).lower())
        if name is None:
            raise ValueError(f"header {raw_name!r} cannot be set; allowed: {', '.join(_LIST_HEADERS.values())}")
        if name in result:
            raise ValueError(f"header {name!r} given twice")
        if not isinstance(value, str) or not value.strip() or not all(" " <= c <= "~" for c in value):
            raise ValueError(f"header {name!r} must be one line of printable ASCII")
        if len(name) + 2 + len(value) > _HEADER_LINE_MAX:
            raise ValueError(f"header {name!r} is longer than {_HEADER_LINE_MAX} characters")
        result[name] = _VerbatimHeader(name, value)
    return list(result.values())


def _reply_error(code: int, message: str) -> SendError:
    """An SMTP reply code in our tree, keeping the number: 4xx retry, everything else refuses."""
    text = f"SMTP {code}: {message}"
    if 400 <= code < 500:
        return TransientSendError(text, code=f"smtp_{code}")
    return PermanentSendError(text, code=f"smtp_{code}")


def _misconfigured(exc: BaseException, username: str | None) -> PermanentSendError | None:
    """A login refused, or no AUTH offered while credentials are configured: the account is wrong, not the
    message, so the error is permanent for the account (its breaker opens at once)."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return PermanentSendError(f"SMTP login refused: {exc}", code=f"smtp_{exc.code}", misconfigured=True)
    if username and type(exc) is aiosmtplib.SMTPException and "AUTH extension is not supported" in str(exc):
        return PermanentSendError(
            f"credentials are configured but the server offers no AUTH: {exc}", code="smtp_no_auth", misconfigured=True
        )
    return None


class SmtpProvider:
    """Sends rendered e-mail (``subject``, ``text`` and/or ``html``) to one SMTP relay."""

    kind: ClassVar[str] = "smtp"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.EMAIL})

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"password", "bounce_token"})
        #: a kept password is only ever sent to the server it was given for
        destination_fields: ClassVar[frozenset[str]] = frozenset({"host"})

        host: str = Field(min_length=1)
        port: int = Field(default=25, ge=1, le=65535)
        username: str | None = None
        password: str | None = None
        starttls: bool = False
        use_tls: bool = False
        sender: str
        timeout: float = Field(default=10, gt=0)
        #: proves a bounce posted to ``/r/{provider_name}/bounces`` comes from the mail server (None: none taken)
        bounce_token: str | None = Field(default=None, min_length=16)

        @field_validator("sender")
        @classmethod
        def _sender_has_address(cls, value: str) -> str:
            address = parseaddr(value)[1]
            if "@" not in address or not address.rpartition("@")[2]:
                raise ValueError("sender must contain an e-mail address, e.g. 'Name <noreply@example.com>'")
            return value

        @model_validator(mode="after")
        def _one_tls_mode(self) -> SmtpProvider.Config:
            if self.starttls and self.use_tls:
                raise ValueError("starttls and use_tls are exclusive: pick STARTTLS or implicit TLS")
            return self

    def __init__(self, config: SmtpProvider.Config, *, name: str) -> None:
        self.config = config
        self.name = name
        self._envelope_sender = parseaddr(config.sender)[1]
        self._domain = self._envelope_sender.rpartition("@")[2]
        self._local_hostname: str | None = None  # looked up once, not per batch

    def message_id(self, delivery_id: str) -> str:
        return f"<{delivery_id}@{self._domain}>"

    def build(self, item: Outgoing) -> EmailMessage:
        """The MIME message for one delivery; ValueError if the content cannot make one."""
        content = item.content
        text, html = content.get("text"), content.get("html")
        if not text and not html:
            raise ValueError("e-mail content needs 'text' or 'html'")
        message = EmailMessage()
        message["Subject"] = str(content.get("subject", ""))
        message["From"] = self.config.sender
        message["To"] = item.address
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = self.message_id(item.delivery_id)
        message["Clarion-Delivery-Id"] = item.delivery_id
        for header in _list_headers(content.get("headers")):
            message[header.name] = header
        if text:
            message.set_content(str(text))
            if html:
                message.add_alternative(str(html), subtype="html")
        else:
            message.set_content(str(html), subtype="html")
        return message

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        results: list[SendResult] = []
        if not batch:
            return results
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        config = self.config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username or None,  # an empty username is no login, whatever the password
            password=config.password if config.username else None,
            use_tls=config.use_tls,
            start_tls=config.starttls,
            timeout=config.timeout,
            local_hostname=self._local_hostname,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, *_CONNECTION_ERRORS) as exc:
            code = exc.code if isinstance(exc, aiosmtplib.SMTPResponseException) else None
            if (misconfigured := _misconfigured(exc, config.username)) is not None:
                return [SendResult(item.delivery_id, error=misconfigured) for item in batch]
            error = TransientSendError(
                f"cannot open SMTP session to {config.host}:{config.port}: {exc}",
                code=f"smtp_{code}" if code else "smtp_connect",
            )
            return [SendResult(item.delivery_id, error=error) for item in batch]
        try:
            for index, item in enumerate(batch):
                try:
                    results.append(await self._send_one(client, item))
                except _CONNECTION_ERRORS as exc:
                    error = TransientSendError(f"SMTP connection lost: {exc}", code="smtp_connection")
                    results.extend(SendResult(rest.delivery_id, error=error) for rest in batch[index:])
                    break
        finally:
            await self._quit(client)
        return results

    async def _send_one(self, client: aiosmtplib.SMTP, item: Outgoing) -> SendResult:
        message_id = self.message_id(item.delivery_id)
        try:
            if not isinstance(item.address, str) or "@" not in item.address:
                raise ValueError(f"not an e-mail address: {item.address!r}")
            message = self.build(item)
            await client.send_message(message, sender=self._envelope_sender, recipients=[item.address])
        except _CONNECTION_ERRORS:
            raise  # the connection is gone: send() fails the rest of the batch
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return SendResult(item.delivery_id, error=_reply_error(refused.code, refused.message))
        except aiosmtplib.SMTPResponseException as exc:
            return SendResult(item.delivery_id, error=_reply_error(exc.code, exc.message))
        except aiosmtplib.SMTPNotSupported as exc:
            error = PermanentSendError(str(exc), code="smtp_not_supported")
            return SendResult(item.delivery_id, error=error)
        except ValueError as exc:  # bad address or header (e.g. a newline in the subject)
            return SendResult(item.delivery_id, error=PermanentSendError(str(exc), code="invalid_content"))
        except aiosmtplib.SMTPException as exc:
            retry = TransientSendError(f"{type(exc).__name__}: {exc}", code="smtp_error")
            return SendResult(item.delivery_id, error=retry)
        return SendResult(item.delivery_id, provider_message_id=message_id)

    @staticmethod
    async def _quit(client: aiosmtplib.SMTP) -> None:
        """Say goodbye politely; the mail is already accepted, so a failing QUIT changes nothing."""
        try:
            if client.is_connected:
                await client.quit()
        except (aiosmtplib.SMTPException, *_CONNECTION_ERRORS):
            pass
        finally:
            client.close()

    @property
    def takes_bounces(self) -> bool:
        return bool(self.config.bounce_token)

    def bounces(self, callback: base.Callback) -> base.ReadCallback:
        """The receipts a bounce carries (see ``dsn``), once its token is proven (``RefusedCallback``)."""
        token = self.config.bounce_token
        given = callback.headers.get("x-clarion-token") or callback.query.get("token")
        scheme, _, bearer = callback.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and not given:
            given = bearer.strip()
        if not token or not base.same_secret(token, given):
            raise base.RefusedCallback("missing or wrong bounce token")
        return dsn.parse(callback.body, callback.content_type, self.message_id)

    async def close(self) -> None:
        """Connections live only for one batch; nothing to release."""
