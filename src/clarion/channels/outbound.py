"""The outbound-URL rule every HTTP provider shares: no request reaches the platform's own network (SSRF).

Webhook URLs come from users and vendor URLs from operators, so a request could be aimed at an internal
service or a cloud metadata endpoint. Only http(s) URLs with a host are called, and unless the operator opted
in (``allow_private_networks``) only public addresses.

Checking a host name and then letting the HTTP client resolve it again at connect would leave a gap: a name
that answers a public address to the check and a private one to the connection (DNS rebinding) slips through.
So the check happens where the connection is made: ``GuardedBackend`` resolves the host once, refuses it if any
address is not public, and connects to those very addresses. TLS still runs against the host name (SNI and
certificate verification), and the ``Host`` header is the URL's, so nothing else about the request changes.
A refusal surfaces from the request as ``PermanentSendError("url_not_allowed")``; a failed look-up as
``TransientSendError("dns_error")`` (resolvers hiccup). Redirects are never followed, for the same reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from clarion.domain.errors import PermanentSendError, SendError, TransientSendError

#: ``resolve(host, port)`` -> the host's addresses, as text
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
    )


def check_syntax(url: Any) -> tuple[str, int]:
    """The host and port of an http(s) URL; ``PermanentSendError("url_not_allowed")`` for anything else."""
    if not isinstance(url, str):
        raise PermanentSendError("the address is not a URL", code="url_not_allowed")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise PermanentSendError(f"invalid URL: {exc}", code="url_not_allowed") from None
    if parts.scheme not in ("http", "https") or not host:
        raise PermanentSendError("only http(s) URLs with a host are allowed", code="url_not_allowed")
    return host, port or (443 if parts.scheme == "https" else 80)


def endpoint(value: str) -> str:
    """A vendor base URL from an account's config, checked as ``check_syntax`` checks (``ValueError``, for a
    pydantic validator), without its trailing slash so paths can be appended."""
    try:
        check_syntax(value)
    except SendError as exc:
        raise ValueError(exc.message) from None
    return value.rstrip("/")


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


async def checked_addresses(host: str, port: int, *, resolve: Resolver = system_resolve) -> list[str]:
    """The addresses of ``host``, every one of them public; raises the refusal otherwise."""
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = await resolve(host, port)
        except OSError as exc:
            raise TransientSendError(f"cannot resolve {host}: {exc}", code="dns_error") from None
    if not addresses or not all(is_public(a) for a in addresses):
        raise PermanentSendError(f"{host} is not a public address", code="url_not_allowed")
    return addresses


async def validate_url(url: Any, *, allow_private_networks: bool, resolve: Resolver = system_resolve) -> None:
    """Raise ``PermanentSendError("url_not_allowed")`` unless ``url`` may be called from here (resolving its host
    now). Providers do not need it before a request: their client checks at connect (see the module docstring)."""
    host, port = check_syntax(url)
    if not allow_private_networks:
        await checked_addresses(host, port, resolve=resolve)


def refusal(url: Any, *, allow_private_networks: bool) -> SendError | None:
    """What can be refused before connecting, without a DNS look-up: the syntax, and a literal address."""
    try:
        host, _ = check_syntax(url)
    except SendError as exc:
        return exc
    literal = _literal(host)
    if not allow_private_networks and literal is not None and not is_public(literal):
        return PermanentSendError(f"{host} is not a public address", code="url_not_allowed")
    return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses it resolved and checked itself, in the same step (no second look-up)."""

    def __init__(
        self,
        *,
        allow_private_networks: bool,
        resolve: Resolver = system_resolve,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private_networks = allow_private_networks
        self.resolve = resolve
        self.network = network or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's interface
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self.allow_private_networks:
            addresses = [host]
        else:
            addresses = await checked_addresses(host, port, resolve=self.resolve)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.network.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's interface
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise PermanentSendError("Unix sockets are not an outbound destination", code="url_not_allowed")

    async def sleep(self, seconds: float) -> None:
        await self.network.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request and error mapping, pooling, TLS) over a ``GuardedBackend``."""

    def __init__(self, backend: GuardedBackend, *, verify: ssl.SSLContext | None = None, http2: bool = False) -> None:
        super().__init__(trust_env=False)
        limits = httpx.Limits()
        # httpx takes no network backend, so its pool is built again with ours, as httpx builds it
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=verify or httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
            http1=True,
            http2=http2,
        )


def client(
    *,
    timeout: float,
    allow_private_networks: bool,
    resolve: Resolver | None = None,
    network: httpcore.AsyncNetworkBackend | None = None,
    verify: ssl.SSLContext | None = None,
    http2: bool = False,
) -> httpx.AsyncClient:
    """An HTTP client that connects only where the rule allows; environment proxies are ignored (a proxy
    would connect on our behalf, past the check). ``verify`` replaces the system's certificate authorities.
    ``http2``: HTTP/2 where the server offers it in TLS (ALPN), one connection multiplexing the account's
    requests; plain-text connections stay HTTP/1.1."""
    backend = GuardedBackend(
        allow_private_networks=allow_private_networks, resolve=resolve or system_resolve, network=network
    )
    return httpx.AsyncClient(
        transport=GuardedTransport(backend, verify=verify, http2=http2),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )
