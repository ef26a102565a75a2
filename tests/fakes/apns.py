"""A fake APNs on loopback that, like Apple's, speaks only HTTP/2 over TLS (ALPN ``h2``).

It serves with a self-signed certificate for 127.0.0.1 (``ca_certificate``, the PEM a test trusts), refuses
a connection that did not negotiate ``h2``, and checks each ``POST /3/device/{token}`` as APNs does: the
provider token is an ES256 JWT with ``kid`` the key id and ``iss`` the team id, signed by the test key
(403 ``InvalidProviderToken`` otherwise), issued within the hour (403 ``ExpiredProviderToken``, also for
tokens the test lists in ``expired``); ``apns-topic`` is the app's bundle id (400 ``BadTopic``); the path
names a hex device token (400 ``BadDeviceToken``). A token listed in ``errors`` gets its scripted answer.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import ssl
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_DEVICE = re.compile(r"^/3/device/([0-9a-fA-F]{8,200})$")


@dataclass(frozen=True)
class ApnsRequest:
    alpn: str | None
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def self_signed() -> tuple[str, bytes]:
    """A certificate for 127.0.0.1 and its key (PEM text, PEM bytes)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake APNs")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def server_context(certificate: str, key: bytes) -> ssl.SSLContext:
    """A server's TLS context presenting ``certificate`` (PEM) with its ``key`` (``self_signed``'s pair)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_file.write_text(certificate)
        key_file.write_bytes(key)
        context.load_cert_chain(cert_file, key_file)
    return context


class FakeApns:
    def __init__(self, team_id: str = "TEAM123456", key_id: str = "KEY1234567", bundle_id: str = "com.example.shop"):
        self.team_id, self.key_id, self.bundle_id = team_id, key_id, bundle_id
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.ca_certificate, self._cert_key = self_signed()
        self.requests: list[ApnsRequest] = []
        #: device token → (HTTP status, reason) answered instead of a success
        self.errors: dict[str, tuple[int, str]] = {}
        #: provider tokens this fake now treats as expired
        self.expired: set[str] = set()
        self.refused_connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def private_key(self) -> str:
        """The .p8 key, as Apple's developer portal hands it out."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return pem.decode()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def provider_tokens(self) -> list[str]:
        return [r.headers.get("authorization", "").removeprefix("bearer ") for r in self.requests]

    async def __aenter__(self) -> FakeApns:
        context = server_context(self.ca_certificate, self._cert_key)
        context.set_alpn_protocols(["h2"])
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
            if alpn != "h2":  # APNs speaks HTTP/2 only
                self.refused_connections += 1
                return
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
            conn.initiate_connection()
            writer.write(conn.data_to_send())
            streams: dict[int, tuple[dict[str, str], bytearray]] = {}
            while data := await reader.read(65535):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = (dict(event.headers), bytearray())  # type: ignore[arg-type]
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        status, answer, extra = self._answer(alpn, headers, bytes(body))
                        response = [(":status", str(status)), *extra.items()]
                        if answer is None:
                            conn.send_headers(event.stream_id, response, end_stream=True)
                        else:
                            payload = orjson.dumps(answer)
                            conn.send_headers(event.stream_id, [*response, ("content-type", "application/json")])
                            conn.send_data(event.stream_id, payload, end_stream=True)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    def _answer(self, alpn: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        method, path = headers.get(":method", ""), headers.get(":path", "")
        plain = {k: v for k, v in headers.items() if not k.startswith(":")}
        self.requests.append(ApnsRequest(alpn, method, path, plain, body))
        if method != "POST":
            return 405, {"reason": "MethodNotAllowed"}, {}
        match = _DEVICE.match(path)
        if match is None:
            return (
                (400, {"reason": "BadDeviceToken"}, {})
                if path.startswith("/3/device/")
                else (404, {"reason": "BadPath"}, {})
            )
        refused = self._refuse_token(plain.get("authorization", ""))
        if refused is not None:
            return 403, {"reason": refused}, {}
        if plain.get("apns-topic") != self.bundle_id:
            return 400, {"reason": "BadTopic"}, {}
        if plain.get("apns-priority") not in ("5", "10") or plain.get("apns-push-type") not in ("alert", "background"):
            return 400, {"reason": "BadPriority"}, {}
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, {"reason": "PayloadEmpty"}, {}
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return 400, {"reason": "PayloadEmpty"}, {}
        scripted = self.errors.get(match.group(1))
        if scripted is not None:
            status, reason = scripted
            answer: dict[str, Any] = {"reason": reason}
            if status == 410:
                answer["timestamp"] = int(time.time() * 1000)
            return status, answer, {}
        return 200, None, {"apns-id": str(uuid.uuid4()).upper()}

    def _refuse_token(self, authorization: str) -> str | None:
        if not authorization.startswith("bearer "):
            return "MissingProviderToken"
        token = authorization[7:]
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, self.key.public_key(), algorithms=["ES256"], options={"require": ["iss", "iat"]})
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        if header.get("kid") != self.key_id or claims["iss"] != self.team_id:
            return "InvalidProviderToken"
        if token in self.expired or time.time() - claims["iat"] > 3600:
            return "ExpiredProviderToken"
        return None
