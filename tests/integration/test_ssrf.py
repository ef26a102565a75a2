"""The outbound-URL rule against DNS rebinding: the connection goes to the very addresses that were checked.

A name that answers a public address to one look-up and 127.0.0.1 to the next must not reach loopback. The
resolver is injected (it answers from a script and counts its calls), and so is the network under the
provider's client: it records the address each connection is made to and carries it to the loopback server,
which stands in for whatever public server the address would be."""

from __future__ import annotations

import ssl
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpcore
import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clarion.channels import outbound
from clarion.channels.sms_http import SmsHttpProvider
from clarion.channels.webhook import WebhookProvider
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing
from tests.integration.loopback import LoopbackServer

PUBLIC = "93.184.216.34"


class Rebinding:
    """A resolver answering ``answers`` in turn (the last one from then on)."""

    def __init__(self, *answers: list[str] | OSError) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, OSError):
            raise answer
        return answer


class Recording(httpcore.AsyncNetworkBackend):
    """Records where each connection goes, then connects to the loopback server instead."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connected: list[tuple[str, int]] = []
        self.real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's interface
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append((host, port))
        return await self.real.connect_tcp("127.0.0.1", self.port, timeout=timeout)

    async def connect_unix_socket(self, *args: typing.Any, **kwargs: typing.Any) -> httpcore.AsyncNetworkStream:
        raise AssertionError("no unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.real.sleep(seconds)


def hook(url: str, n: int = 1) -> Outgoing:
    return Outgoing(f"dlv-{n}", f"msg-{n}", f"u{n}", Channel.WEBHOOK, url, {"body": {"n": n}})


async def send(provider: WebhookProvider | SmsHttpProvider, *batch: Outgoing) -> list[typing.Any]:
    try:
        return await provider.send(list(batch))
    finally:
        await provider.close()


def webhook(resolve: Rebinding, network: Recording) -> WebhookProvider:
    config = WebhookProvider.Config(secret="s", timeout=5)
    return WebhookProvider(config, name="hooks", resolve=resolve, network=network)


async def test_the_connection_goes_to_the_checked_address_not_a_second_answer() -> None:
    resolve = Rebinding([PUBLIC], ["127.0.0.1"])
    async with LoopbackServer() as server:
        network = Recording(server.port)
        [result] = await send(webhook(resolve, network), hook("http://hooks.example.com:8080/in"))

    assert result.error is None
    assert resolve.asked == [("hooks.example.com", 8080)]  # one look-up: nothing to rebind between
    assert network.connected == [(PUBLIC, 8080)]  # the checked answer, never the later 127.0.0.1
    [request] = server.requests
    assert request.headers["Host"] == "hooks.example.com:8080"  # the request itself is unchanged
    assert request.path == "/in"


async def test_a_name_that_rebinds_after_a_check_is_refused_at_connect() -> None:
    resolve = Rebinding([PUBLIC], ["127.0.0.1"])
    url = "http://rebind.example.com/in"
    await outbound.validate_url(url, allow_private_networks=False, resolve=resolve)  # the first answer passes
    async with LoopbackServer() as server:
        network = Recording(server.port)
        [result] = await send(webhook(resolve, network), hook(url))

    assert isinstance(result.error, PermanentSendError) and result.error.code == "url_not_allowed"
    assert network.connected == [] and server.requests == []


@pytest.mark.parametrize("answer", [["10.0.0.5"], [PUBLIC, "127.0.0.1"], ["::1"], ["169.254.169.254"], []])
async def test_any_private_answer_refuses_the_host(answer: list[str]) -> None:
    async with LoopbackServer() as server:
        network = Recording(server.port)
        [result] = await send(webhook(Rebinding(answer), network), hook("https://hooks.example.com/"))

    assert isinstance(result.error, PermanentSendError) and result.error.code == "url_not_allowed"
    assert network.connected == []


async def test_a_failed_look_up_is_transient() -> None:
    async with LoopbackServer() as server:
        network = Recording(server.port)
        resolve = Rebinding(OSError("Temporary failure in name resolution"))
        [result] = await send(webhook(resolve, network), hook("http://hooks.example.com/"))

    assert isinstance(result.error, TransientSendError) and result.error.code == "dns_error"
    assert network.connected == []


async def test_a_literal_private_address_is_refused_before_any_connection() -> None:
    async with LoopbackServer() as server:
        network = Recording(server.port)
        resolve = Rebinding([PUBLIC])
        results = await send(webhook(resolve, network), hook("http://127.0.0.1:9/", 1), hook("http://[::1]/", 2))

    assert [r.error.code for r in results] == ["url_not_allowed"] * 2
    assert resolve.asked == [] and network.connected == []


async def test_allow_private_networks_keeps_its_meaning() -> None:
    async with LoopbackServer() as server:
        config = WebhookProvider.Config(secret="s", timeout=5, allow_private_networks=True)
        [result] = await send(WebhookProvider(config, name="hooks"), hook(server.url.replace("127.0.0.1", "localhost")))
    assert result.error is None and len(server.requests) == 1


async def test_sms_http_vendor_url_is_pinned_too() -> None:
    resolve = Rebinding([PUBLIC], ["127.0.0.1"])
    sms = Outgoing("dlv-1", "msg-1", "u1", Channel.SMS, "+8613800138000", {"text": "hi"})
    async with LoopbackServer() as server:
        network = Recording(server.port)
        config = SmsHttpProvider.Config(url="http://sms.example.com/send", timeout=5)
        first = SmsHttpProvider(config, name="vendor", resolve=resolve, network=network)
        [sent] = await send(first, sms)
        second = SmsHttpProvider(config, name="vendor", resolve=resolve, network=network)
        [refused] = await send(second, sms)  # a new connection asks again, and the answer is now loopback

    assert sent.error is None
    assert isinstance(refused.error, PermanentSendError) and refused.error.code == "url_not_allowed"
    assert network.connected == [(PUBLIC, 80)]
    assert len(server.requests) == 1 and server.requests[0].headers["Host"] == "sms.example.com"


# -- TLS: the pinned address is connected to, the host name is verified ----------------------------------------


def _certificates(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A test CA and a server certificate for ``name`` it signed: (server context, client context trusting it)."""
    now = datetime.now(UTC)

    def build(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey, *, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("Clarion test CA", ca_key, "Clarion test CA", ca_key, ca=True)
    leaf = build(name, leaf_key, "Clarion test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem) + ca_cert.public_bytes(pem))
    (tmp_path / "leaf.key").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    client = ssl.create_default_context(cadata=ca_cert.public_bytes(pem).decode())
    return server, client


async def test_tls_is_verified_for_the_host_name_over_the_pinned_address(tmp_path: Path) -> None:
    server_tls, client_tls = _certificates(tmp_path, "vendor.example.com")
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.host)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        network = Recording(port)
        resolve = Rebinding([PUBLIC])
        http = outbound.client(
            timeout=5, allow_private_networks=False, resolve=resolve, network=network, verify=client_tls
        )
        async with http:
            response = await http.get(f"https://vendor.example.com:{port}/")
            with pytest.raises(httpx.ConnectError, match=r"certificate|hostname"):
                await http.get(f"https://other.example.com:{port}/")  # same address, a name the cert is not for
    finally:
        await runner.cleanup()

    assert response.status_code == 200 and response.json() == {"ok": True}
    assert network.connected == [(PUBLIC, port), (PUBLIC, port)]
    assert seen == [f"vendor.example.com:{port}"]
