"""APNs sender: HTTP/2 with token auth (ES256 JWT from the .p8 key, refreshed every 40
minutes, well inside Apple's one hour), bounded concurrency, retries for 429/5xx honouring
Retry-After up to a cap, dead tokens (410 Unregistered, 400 BadDeviceToken) reported as such.

The transport is push/h2_pool.py: a few HTTP/2 connections with many streams each, as Apple
recommends (aioapns cannot be pointed at another host than Apple's and drops Retry-After;
httpx held this sender near 500 sends a second).

Settings: CRM_APNS_KEY (.p8 path), CRM_APNS_KEY_ID, CRM_APNS_TEAM_ID, CRM_APNS_TOPIC (the
app's bundle id), CRM_APNS_URL (default https://api.push.apple.com), CRM_APNS_CA_FILE (an
extra CA to trust, e.g. the local fake's)."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from hpack import NeverIndexedHeaderTuple

from push.h2_pool import H2ConnectionError, H2Pool, H2StreamRefused
from push.retries import Retryable, SendResult, retry_after_seconds, send_with_retries

DEFAULT_URL = "https://api.push.apple.com"
REFRESH_AFTER = 40 * 60  # Apple rejects provider tokens older than an hour
DEAD_REASONS = {"Unregistered": "unregistered", "BadDeviceToken": "bad_token"}


class ApnsConfigError(ValueError):
    """A missing or unusable APNs setting; the message names it."""


def load_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """The .p8 signing key, or an ApnsConfigError naming the file and what is wrong."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ApnsConfigError(
            f"CRM_APNS_KEY {p}: cannot read the .p8 key ({exc.strerror})"
        ) from None
    try:
        key = load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise ApnsConfigError(
            f"CRM_APNS_KEY {p}: not a PEM private key (an APNs .p8 auth key is expected): {exc}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ApnsConfigError(
            f"CRM_APNS_KEY {p}: APNs token auth needs a P-256 EC key (ES256), "
            f"got {type(key).__name__}"
        )
    return key


class ApnsSender:
    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        key_id: str,
        team_id: str,
        topic: str,
        base_url: str = DEFAULT_URL,
        ca_file: str | None = None,
        concurrency: int = 256,
        connections: int = 4,
        attempts: int = 5,
        retry_cap: float = 30.0,
        expiration: int = 24 * 3600,
        priority: int = 10,
        refresh_after: float = REFRESH_AFTER,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("CRM_APNS_KEY_ID", key_id), ("CRM_APNS_TEAM_ID", team_id),
                            ("CRM_APNS_TOPIC", topic)):
            if not value:
                raise ApnsConfigError(f"{name} is not set")
        self.key, self.key_id, self.team_id, self.topic = key, key_id, team_id, topic
        self.base_url = base_url.rstrip("/")
        url = urlsplit(self.base_url)
        if url.scheme != "https" or not url.hostname or url.path:
            raise ApnsConfigError(f"CRM_APNS_URL {base_url!r}: expected https://host[:port] "
                                  "(APNs is HTTP/2 over TLS)")
        self.host, self.port = url.hostname, url.port or 443
        self.connections = connections
        self.ca_file = ca_file
        self.limit = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.attempts = attempts
        self.retry_cap = retry_cap
        self.expiration = expiration
        self.priority = priority
        self.refresh_after = refresh_after
        self.timeout = timeout
        self.clock = clock
        self._pool: H2Pool | None = None
        self._jwt: tuple[str, float] | None = None

    @classmethod
    def from_env(cls, **kwargs) -> ApnsSender:
        path = os.environ.get("CRM_APNS_KEY")
        if not path:
            raise ApnsConfigError("CRM_APNS_KEY is not set (path to the APNs .p8 auth key)")
        ca = os.environ.get("CRM_APNS_CA_FILE") or None
        if ca and not Path(ca).is_file():
            raise ApnsConfigError(f"CRM_APNS_CA_FILE {ca}: no such file")
        return cls(
            load_key(path),
            os.environ.get("CRM_APNS_KEY_ID", ""),
            os.environ.get("CRM_APNS_TEAM_ID", ""),
            os.environ.get("CRM_APNS_TOPIC", ""),
            os.environ.get("CRM_APNS_URL", DEFAULT_URL),
            ca,
            **kwargs,
        )

    @property
    def pool(self) -> H2Pool:
        # made on first use, in the event loop that sends (its connections belong to it)
        if self._pool is None:
            context = ssl.create_default_context()
            if self.ca_file:
                context.load_verify_locations(cafile=self.ca_file)
            context.set_alpn_protocols(["h2"])
            self._pool = H2Pool(self.host, self.port, context, connections=self.connections)
        return self._pool

    def bearer(self, force: bool = False) -> str:
        now = self.clock()
        if force or self._jwt is None or now - self._jwt[1] >= self.refresh_after:
            token = jwt.encode(
                {"iss": self.team_id, "iat": int(now)},
                self.key,
                algorithm="ES256",
                headers={"kid": self.key_id},
            )
            self._jwt = (token, now)
        return self._jwt[0]

    def _payload(self, title: str, body: str, data: dict[str, str]) -> bytes:
        # custom keys beside "aps" reach the app; the delivery id is among them
        return json.dumps({"aps": {"alert": {"title": title, "body": body}}, **data}).encode()

    async def _once(self, token: str, title: str, body: str, data: dict[str, str]) -> SendResult:
        headers = [
            (b"authorization", b"bearer " + self.bearer().encode()),
            (b"apns-topic", self.topic.encode()),
            (b"apns-push-type", b"alert"),
            (b"apns-expiration", b"%d" % (int(time.time()) + self.expiration)),
            (b"apns-priority", b"%d" % self.priority),
        ]
        if "delivery_id" in data:
            # a resend after an interrupted run replaces the notification instead of doubling it
            headers.append(NeverIndexedHeaderTuple(
                b"apns-collapse-id", data["delivery_id"][:64].encode()))
        try:
            async with asyncio.timeout(self.timeout):
                resp = await self.pool.request(
                    b"POST", f"/3/device/{token}".encode(), headers,
                    self._payload(title, body, data))
        except H2StreamRefused:
            raise  # refused unprocessed even after the pool's own retries
        except H2ConnectionError as exc:
            # the connection broke before the answer: in doubt, as after a kill; sent again
            # (the same apns-collapse-id, so a device shows it once) rather than lost
            raise Retryable(f"transport:{type(exc).__name__}", None) from exc
        status = resp.status
        if status == 200:
            return SendResult("sent")
        try:
            reason = json.loads(resp.body).get("reason", "") if resp.body else ""
        except (ValueError, AttributeError):
            reason = ""
        if status == 429 or status >= 500:
            retry_after = resp.headers.get(b"retry-after")
            raise Retryable(f"http_{status}:{reason}", retry_after_seconds(
                retry_after.decode() if retry_after else None))
        if status == 403 and reason == "ExpiredProviderToken":
            self.bearer(force=True)
            raise Retryable(f"http_403:{reason}", 0.0)
        if status == 410 or reason in DEAD_REASONS:
            return SendResult("failed", DEAD_REASONS.get(reason, "unregistered"), dead_token=True)
        return SendResult("failed", f"http_{status}:{reason}")

    async def send(self, token: str, title: str, body: str, data: dict[str, str]) -> SendResult:
        return await send_with_retries(
            lambda: self._once(token, title, body, data), self.limit, self.attempts,
            self.retry_cap, (H2ConnectionError, TimeoutError))

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
