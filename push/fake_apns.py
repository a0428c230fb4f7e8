"""TEST SERVER ONLY: a local stand-in for Apple's APNs provider API (HTTP/2 over TLS).

It serves a generated self-signed certificate, checks each request's ES256 provider token
against the test key's public half, records what it accepts, and fails chosen device tokens
the way APNs does (410 Unregistered, 400 BadDeviceToken, 429 with Retry-After, 500), so the
sender is exercised over real HTTP/2. Never a production path.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import h2.events
import h2.exceptions
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hyperframe.frame import GoAwayFrame

from push.h2_pool import fast_connection


def write_test_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key in the PKCS#8 PEM form Apple's .p8 files use."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return key


def write_self_signed(cert_path: Path, key_path: Path) -> None:
    """A self-signed certificate for localhost / 127.0.0.1; the cert doubles as the CA file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crm fake apns (test only)")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


@dataclass
class FakeApnsState:
    public_key: ec.EllipticCurvePublicKey
    key_id: str
    team_id: str
    topic: str
    received: list[dict] = field(default_factory=list)
    # token -> "unregistered" | "bad_token" | "429:<seconds>" | "500"; "429"/"500" fail once
    failures: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    delay: float = 0.0  # seconds each answer waits (a congested service: requests in flight)
    # a connection's end after this many requests on it: "goaway" answers them and sends
    # GOAWAY naming the last one (later streams are refused, unprocessed); "drop" closes the
    # TCP connection at once, leaving the unanswered ones without an answer
    end_after: int | None = None
    end_how: str = "goaway"
    connections: int = 0  # connections accepted
    refused: int = 0  # requests that came above a GOAWAY's last stream (not processed)
    provider_tokens: list[str] = field(default_factory=list)  # distinct JWTs, in order seen
    # a verified token's claims (or its error), so a token is checked once, not per request
    _verified: dict[str, dict | str] = field(default_factory=dict, repr=False)

    def _claims(self, token: str) -> dict | str:
        """The token's claims if it is ours and well signed, else the reason to refuse it."""
        if token not in self._verified:
            try:
                head = jwt.get_unverified_header(token)
                claims = jwt.decode(token, self.public_key, algorithms=["ES256"])
            except jwt.PyJWTError:
                claims = "InvalidProviderToken"
            else:
                if head.get("kid") != self.key_id or claims.get("iss") != self.team_id:
                    claims = "InvalidProviderToken"
            self._verified[token] = claims
        return self._verified[token]

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict, dict[str, str]]:
        """(status, JSON body, extra headers) for one request, as APNs would answer it."""
        path = headers.get(":path", "")
        if headers.get(":method") != "POST" or not path.startswith("/3/device/"):
            return 404, {"reason": "BadPath"}, {}
        auth = headers.get("authorization", "")
        if not auth.startswith("bearer "):
            return 403, {"reason": "MissingProviderToken"}, {}
        token = auth.removeprefix("bearer ")
        claims = self._claims(token)
        if isinstance(claims, str):
            return 403, {"reason": claims}, {}
        if claims.get("iat", 0) < time.time() - 3600:
            return 403, {"reason": "ExpiredProviderToken"}, {}
        if token not in self.provider_tokens:
            self.provider_tokens.append(token)
        if headers.get("apns-topic") != self.topic:
            return 400, {"reason": "TopicDisallowed"}, {}
        device = path.removeprefix("/3/device/")
        self.attempts[device] = self.attempts.get(device, 0) + 1
        mode = self.failures.get(device)
        if mode == "unregistered":
            return 410, {"reason": "Unregistered", "timestamp": 0}, {}
        if mode == "bad_token":
            return 400, {"reason": "BadDeviceToken"}, {}
        if mode and mode.startswith("429"):
            self.failures.pop(device)
            wait = mode.partition(":")[2] or "1"
            return 429, {"reason": "TooManyRequests"}, {"retry-after": wait}
        if mode == "500":
            self.failures.pop(device)
            return 500, {"reason": "InternalServerError"}, {}
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, {"reason": "BadPayload"}, {}
        self.received.append({"token": device, "headers": headers, "payload": payload})
        return 200, {}, {"apns-id": str(uuid.uuid4()).upper()}


class _H2Protocol(asyncio.Protocol):
    def __init__(self, state: FakeApnsState) -> None:
        self.state = state
        # the client-side speed-ups too (no Huffman, no header checks): the fake must not be
        # what limits a throughput measurement
        self.conn = fast_connection(client_side=False, validate_inbound=False)
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.pending: set[int] = set()  # complete requests not yet answered
        self.requests = 0
        self.last_stream: int | None = None  # set once this side sent GOAWAY

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections += 1
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.write(self.conn.data_to_send())
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.streams[event.stream_id] = (
                    {k.decode(): v.decode() for k, v in event.headers}, bytearray())
            elif isinstance(event, h2.events.DataReceived):
                self.streams[event.stream_id][1].extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                headers, body = self.streams.pop(event.stream_id)
                if self.last_stream is not None and event.stream_id > self.last_stream:
                    self.state.refused += 1
                    continue  # after our GOAWAY: refused, never processed
                self.requests += 1
                self.pending.add(event.stream_id)
                if self.state.end_after is not None and self.requests >= self.state.end_after:
                    if self.state.end_how == "drop":
                        self.transport.close()  # nothing pending gets an answer
                        return
                    # a graceful GOAWAY: written as a raw frame, since h2 would refuse to
                    # answer the streams up to it once it had sent one itself
                    self.last_stream = event.stream_id
                    self.transport.write(self.conn.data_to_send())
                    self.transport.write(GoAwayFrame(
                        0, last_stream_id=event.stream_id, error_code=0).serialize())
                if self.state.delay:
                    asyncio.get_running_loop().call_later(
                        self.state.delay, self._answer, event.stream_id, headers, bytes(body))
                else:
                    self._answer(event.stream_id, headers, bytes(body), write=False)
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(event.stream_id, None)
                self.pending.discard(event.stream_id)
        if not self.transport.is_closing():
            self.transport.write(self.conn.data_to_send())

    def _answer(self, stream_id: int, headers: dict[str, str], body: bytes,
                write: bool = True) -> None:
        if stream_id not in self.pending or self.transport.is_closing():
            return  # reset by the client, or the connection is gone
        self.pending.discard(stream_id)
        status, answer, extra = self.state.answer(headers, body)
        out = json.dumps(answer).encode() if answer else b""
        self.conn.send_headers(stream_id, [
            (b":status", b"%d" % status), (b"content-length", b"%d" % len(out)),
            *((k.encode(), v.encode()) for k, v in extra.items())],
            end_stream=not out)
        if out:
            self.conn.send_data(stream_id, out, end_stream=True)
        if write:
            self.transport.write(self.conn.data_to_send())
        if self.last_stream is not None and not self.pending:
            self.transport.write(self.conn.data_to_send())
            self.transport.close()  # GOAWAY sent and every stream up to it answered


class FakeApns:
    """The fake APNs on 127.0.0.1 in a background thread: start() returns its base URL."""

    def __init__(self, state: FakeApnsState, cert_file: Path, key_file: Path,
                 port: int = 0) -> None:
        self.state = state
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert_file, key_file)
        self.context.set_alpn_protocols(["h2"])
        self.port = port
        self.loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self._server = self.loop.run_until_complete(self.loop.create_server(
                lambda: _H2Protocol(self.state), "127.0.0.1", self.port, ssl=self.context))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-apns", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake APNs did not start")
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self.loop.call_soon_threadsafe(self._server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(5)
