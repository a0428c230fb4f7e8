"""deploy/nginx/crm-collector.conf under a real nginx.

The repository's file is included as it is, from a throwaway top-level nginx.conf whose pid,
logs and temporary files live in the test's folder; only its placeholders are rewritten
(ports, certificate paths, the collector's address), each of which must be found exactly
once. Then `nginx -t` must accept it, and requests through a running nginx must behave as
docs/deploy.md says: body and header limits, /metrics kept internal, the client's address
forwarded (and forged ones dropped), the HTTP redirect deaf to a hostile Host, 429 past the
rate limit. Most tests run nginx in front of a small recording HTTP server, which shows what
reaches the upstream; one runs it in front of a real collector and database.

nginx is optional: without it (Debian/Ubuntu: `apt-get install nginx`) these tests are skipped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import http.client
import inspect
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
import pytest

from tests.events import batch
from tests.requirements import optional

ROOT = Path(__file__).resolve().parents[1]
SITE_CONF = ROOT / "deploy" / "nginx" / "crm-collector.conf"
SERVER_NAME = "collector.example.com"
CERT_PLACEHOLDER = "/etc/ssl/certs/crm-collector.example.com.pem"
KEY_PLACEHOLDER = "/etc/ssl/private/crm-collector.example.com.key"
ORIGIN = "https://shop.example"


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    # /usr/sbin is often missing from a non-root user's PATH.
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


NGINX = find_nginx()


@pytest.fixture(autouse=True, scope="module")
def _nginx_installed() -> None:
    """nginx is optional: listed in the run's components summary, skipped when missing."""
    if not optional("nginx", NGINX is not None,
                    "Debian/Ubuntu: apt-get install nginx; without it "
                    "deploy/nginx/crm-collector.conf is not tested"):
        pytest.skip("nginx is not installed (optional): deploy/nginx is not tested")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- The configuration -------------------------------------------------------------------------


def rewrite(text: str, pattern: str, replacement: str) -> str:
    """Replace what `pattern` matches, which must occur exactly once in the site file."""
    new, n = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert n == 1, (
        f"{SITE_CONF.relative_to(ROOT)} has {n} matches of {pattern!r} (expected 1): "
        "update the rewrites in tests/test_deploy_nginx.py along with the config"
    )
    return new


def site_for_test(http_port: int, https_port: int, internal_port: int, upstream_port: int,
                  cert: Path, key: Path) -> str:
    text = SITE_CONF.read_text()
    text = rewrite(text, r"^(\s*)listen 80;$", rf"\1listen 127.0.0.1:{http_port};")
    text = rewrite(text, r"^\s*listen \[::\]:80;\n", "")
    text = rewrite(text, r"^(\s*)listen 443 ssl", rf"\1listen 127.0.0.1:{https_port} ssl")
    text = rewrite(text, r"^\s*listen \[::\]:443 .*\n", "")
    text = rewrite(text, r"^(\s*)listen 9180;$", rf"\1listen 127.0.0.1:{internal_port};")
    text = rewrite(text, r"^(\s*)server 127\.0\.0\.1:8080\b",
                   rf"\1server 127.0.0.1:{upstream_port}")
    text = rewrite(text, rf"^(\s*ssl_certificate\s+){re.escape(CERT_PLACEHOLDER)};",
                   rf"\g<1>{cert};")
    text = rewrite(text, rf"^(\s*ssl_certificate_key\s+){re.escape(KEY_PLACEHOLDER)};",
                   rf"\g<1>{key};")
    return text


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for SERVER_NAME and 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class Nginx:
    """nginx with the repository's site file, everything it writes under `folder`."""

    folder: Path
    upstream_port: int
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    internal_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.cert, key = make_certificate(self.folder)
        site = self.folder / "crm-collector.conf"
        site.write_text(site_for_test(self.http_port, self.https_port, self.internal_port,
                                      self.upstream_port, self.cert, key))
        f = self.folder
        # As root, workers would switch to an unprivileged user that cannot write the test's
        # folder (pytest makes it 0700): keep them root. Unprivileged, there is no switch.
        user = "user root;\n" if os.geteuid() == 0 else ""
        self.conf = f / "nginx.conf"
        self.conf.write_text(f"""{user}worker_processes 1;
daemon off;
pid {f}/nginx.pid;
error_log {f}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {f}/access.log;
    client_body_temp_path {f}/client_body;
    proxy_temp_path {f}/proxy;
    fastcgi_temp_path {f}/fastcgi;
    uwsgi_temp_path {f}/uwsgi;
    scgi_temp_path {f}/scgi;
    include {site};
}}
""")

    def command(self, *args: str) -> list[str]:
        assert NGINX
        return [NGINX, "-p", f"{self.folder}/", "-e", f"{self.folder}/error.log",
                "-c", str(self.conf), *args]

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)

    def start(self, timeout: float = 15) -> Nginx:
        checked = self.check()
        assert checked.returncode == 0, checked.stderr
        self.proc = subprocess.Popen(self.command(), stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: "
                                   f"{self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("nginx did not start listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish requests, then exit
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=f"https://127.0.0.1:{self.https_port}", verify=self.tls,
                            timeout=15, **kwargs)

    def raw(self, method: str, target: str, headers: dict[str, str], *,
            port: int | None = None, tls: bool = True) -> http.client.HTTPResponse:
        """One request sent as written: the target is not normalised, Host is ours to set."""
        port = port or (self.https_port if tls else self.http_port)
        conn = (http.client.HTTPSConnection("127.0.0.1", port, context=self.tls, timeout=15)
                if tls else http.client.HTTPConnection("127.0.0.1", port, timeout=15))
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        conn.close()
        return response


# --- A recording upstream ----------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    header_lines: list[tuple[str, str]]  # as received, repeats included


TRACKER = b"/* tracker */\n" + b"window.crm = window.crm || [];\n" * 200


class Upstream:
    """Stands in for the collector: records every request, answers like the collector."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream keepalive expects
            disable_nagle_algorithm = True  # headers and body go in two writes

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Content-Length"):
                    return self.rfile.read(int(self.headers["Content-Length"]))
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    out = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return out
                return b""

            def _answer(self, status: int, body: bytes = b"", **headers: str) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                lines = [(k.lower(), v) for k, v in self.headers.items()]
                seen.append(Seen(self.command, self.path, headers, self._body(), lines))
                path = self.path.split("?")[0]
                origin = headers.get("origin", "")
                if path == "/v1/events" and self.command == "POST":
                    self._answer(202, b'{"accepted":1,"rejected":[]}',
                                 Content_Type="application/json")
                elif path == "/v1/events" and self.command == "OPTIONS":
                    self._answer(204, Access_Control_Allow_Origin=origin,
                                 Access_Control_Allow_Methods="POST, OPTIONS")
                elif path == "/v1/tracker.js":
                    self._answer(200, TRACKER, Content_Type="application/javascript",
                                 Cache_Control="public, max-age=300")
                elif path == "/metrics":
                    self._answer(200, b"crm_database_up 1.0\n", Content_Type="text/plain")
                elif path == "/healthz":
                    self._answer(200, b'{"status":"ok"}', Content_Type="application/json")
                else:
                    self._answer(404, b'{"error":"upstream: no such route"}')

            do_GET = do_POST = do_OPTIONS = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path.split("?")[0] == path]

    def with_body(self, body: bytes) -> list[Seen]:
        return [s for s in self.seen if s.body == body]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def site(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    nginx = Nginx(tmp_path_factory.mktemp("nginx"), upstream.port).start()
    yield nginx
    nginx.stop()


# --- The configuration as nginx reads it -------------------------------------------------------


def test_nginx_accepts_the_configuration(tmp_path):
    result = Nginx(tmp_path, upstream_port=free_port()).check()
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


def nginx_size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def test_limits_line_up_with_the_collectors_own(monkeypatch):
    import uvicorn

    from collector import app as collector_app

    text = SITE_CONF.read_text()
    public = text[text.index("listen 443"):]
    # Bodies: never refuse what the collector accepts, and refuse what is plainly too large.
    collector_max = collector_app.CollectorConfig("postgresql://unused").max_body_bytes
    nginx_max = nginx_size(re.search(r"client_max_body_size\s+(\w+);", public)[1])
    assert collector_max <= nginx_max <= collector_max + 64 * 1024

    # Upstream keep-alive: nginx must give up an idle connection before the collector closes
    # it, or a request can be sent on a connection being closed (a 502 for the client).
    options: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: options.update(kw))
    collector_app.serve(collector_app.CollectorConfig("postgresql://unused"), "127.0.0.1", 0)
    collector_keepalive = options.get(
        "timeout_keep_alive",
        inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default,
    )
    upstream_block = text[text.index("upstream crm_collector"):text.index("server {")]
    nginx_keepalive = re.search(r"^\s*keepalive_timeout\s+(\d+)s;", upstream_block, re.M)[1]
    assert int(nginx_keepalive) < collector_keepalive
    # uvicorn reads X-Forwarded-* only from the addresses it trusts, 127.0.0.1 by default.
    assert options.get("proxy_headers", True)
    assert options.get("forwarded_allow_ips") in (None, "127.0.0.1", "127.0.0.1,::1")

    # Headers and their deadline: nginx is not more lenient than the collector, so what it
    # lets through is not refused behind it (a few forwarding headers aside).
    defaults = {f.name: f.default for f in dataclasses.fields(collector_app.CollectorConfig)}
    n, size = re.search(r"large_client_header_buffers\s+(\d+)\s+(\w+);", public).groups()
    assert int(n) * nginx_size(size) <= defaults.get("max_head_bytes", 16 * 1024)
    header_timeout = re.search(r"client_header_timeout\s+(\d+)s;", public)[1]
    assert int(header_timeout) <= defaults.get("head_timeout_seconds", 10)


# --- Requests through nginx, to a recording upstream -------------------------------------------


def test_body_over_1mb_is_refused_by_nginx_and_never_reaches_the_collector(site, upstream):
    too_big = b"[" + b" " * (1024 * 1024) + b"]"
    with site.client() as client:
        r = client.post("/v1/events", content=too_big, headers={"Origin": ORIGIN})
    assert r.status_code == 413
    assert "larger than" in r.json()["error"]
    assert r.headers["access-control-allow-origin"] == ORIGIN  # the tracker can read it
    assert not upstream.with_body(too_big)


def test_slow_or_chunked_bodies_are_buffered_then_sent_whole(site, upstream):
    # The collector's own limit, exactly, sent chunked: nginx reads it all (spooling past
    # client_body_buffer_size to its temporary folder), then sends it with a Content-Length.
    body = b"[" + b" " * (1_000_000 - 2) + b"]"
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
    with site.client() as client:
        r = client.post("/v1/events", content=chunks)
    assert r.status_code == 202
    (seen,) = upstream.with_body(body)
    assert seen.headers["content-length"] == "1000000"
    assert "transfer-encoding" not in seen.headers


def test_gzip_bodies_pass_through_untouched(site, upstream):
    body = gzip.compress(orjson.dumps(batch(20)))
    with site.client() as client:
        r = client.post("/v1/events", content=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 202
    (seen,) = upstream.with_body(body)
    assert seen.headers["content-encoding"] == "gzip"


def test_client_address_reaches_the_collector_and_forged_ones_do_not(site, upstream):
    body = orjson.dumps(batch(1))
    forged = {"X-Forwarded-For": "203.0.113.66", "X-Real-IP": "203.0.113.66",
              "X-Forwarded-Proto": "http", "Host": "evil.example"}
    with site.client() as client:
        assert client.post("/v1/events", content=body, headers=forged).status_code == 202
    (seen,) = upstream.with_body(body)
    forwarded = [(k, v) for k, v in seen.header_lines
                 if k in ("x-forwarded-for", "x-real-ip", "x-forwarded-proto", "host")]
    assert sorted(forwarded) == [  # once each: the client's copies are replaced, not kept
        ("host", SERVER_NAME), ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "https"), ("x-real-ip", "127.0.0.1"),
    ]


@pytest.mark.parametrize("target", ["/metrics", "/metrics?format=text", "//metrics", "/%6Detrics"])
def test_metrics_are_refused_on_the_public_server(site, upstream, target):
    before = len(upstream.requests("/metrics")) + len(upstream.requests(target))
    r = site.raw("GET", target, {"Host": SERVER_NAME})
    assert r.status == 403
    assert len(upstream.requests("/metrics")) + len(upstream.requests(target)) == before


def test_metrics_are_served_on_the_internal_listener(site, upstream):
    r = httpx.get(f"http://127.0.0.1:{site.internal_port}/metrics", timeout=10)
    assert r.status_code == 200 and "crm_database_up" in r.text
    assert upstream.requests("/metrics")
    assert httpx.get(f"http://127.0.0.1:{site.internal_port}/v1/events").status_code == 404


def test_only_the_public_routes_are_proxied(site, upstream):
    before = len(upstream.seen)
    with site.client() as client:
        for path in ("/", "/docs", "/v1/other", "/metrics/"):
            r = client.get(path)
            assert r.status_code == 404, path
            assert r.json() == {"error": "not found"}
    assert len(upstream.seen) == before


def test_redirect_to_https_uses_the_configured_name_not_the_host_header(site):
    r = site.raw("GET", "/v1/tracker.js?v=1", {"Host": "evil.example"}, tls=False)
    assert r.status == 301
    assert r.getheader("Location") == f"https://{SERVER_NAME}/v1/tracker.js?v=1"
    # Absolute-form request target: nginx takes the host from it, the redirect still does not.
    r = site.raw("GET", "http://evil.example/v1/tracker.js", {"Host": "evil.example"}, tls=False)
    assert r.status == 301
    assert r.getheader("Location") == f"https://{SERVER_NAME}/v1/tracker.js"


def test_cors_preflights_reach_the_collector(site, upstream):
    before = len(upstream.requests("/v1/events"))
    with site.client() as client:
        r = client.options("/v1/events", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ORIGIN
    seen = upstream.requests("/v1/events")[before:]
    assert [s.method for s in seen] == ["OPTIONS"]


def test_tracker_is_cacheable_and_compressed_over_http2(site):
    with site.client(http2=True) as client:
        r = client.get("/v1/tracker.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.http_version == "HTTP/2"
    assert r.headers["cache-control"] == "public, max-age=300"
    assert r.headers["content-encoding"] == "gzip"
    assert r.content == TRACKER
    assert "strict-transport-security" in r.headers


def test_oversized_request_headers_are_refused_by_nginx(site, upstream):
    before = len(upstream.seen)
    with site.client() as client:
        r = client.get("/v1/tracker.js", headers={"X-Big": "a" * 20_000})
        assert r.status_code in (400, 431)
        assert len(upstream.seen) == before
        # 10 KB in several ordinary lines is fine.
        headers = {f"X-Filler-{i}": "b" * 2000 for i in range(5)}
        assert client.get("/v1/tracker.js", headers=headers).status_code == 200


def test_rate_limit_answers_429_per_client_address(tmp_path, upstream):
    nginx = Nginx(tmp_path, upstream.port).start()
    try:
        body = orjson.dumps(batch(1))
        before = len(upstream.with_body(body))
        started = time.monotonic()
        statuses = []
        with nginx.client() as client:
            for _ in range(250):
                r = client.post("/v1/events", content=body, headers={"Origin": ORIGIN})
                statuses.append(r.status_code)
                if r.status_code == 429:
                    limited = r
        elapsed = time.monotonic() - started
        passed = statuses.count(202)
        assert set(statuses) == {202, 429}
        # burst=100 nodelay at 20 r/s: the first 101 pass at once, then about 20 a second.
        assert 101 <= passed <= 101 + 20 * elapsed + 5
        assert len(upstream.with_body(body)) - before == passed
        assert limited.headers["retry-after"] == "1"
        assert limited.headers["access-control-allow-origin"] == ORIGIN
        assert "retry" in limited.json()["error"]
        # Another client address has its own allowance (127.0.0.2 is loopback too on Linux).
        other = httpx.HTTPTransport(verify=nginx.tls, local_address="127.0.0.2")
        with httpx.Client(transport=other, timeout=15) as client:
            r = client.post(f"https://127.0.0.1:{nginx.https_port}/v1/events", content=body)
        assert r.status_code == 202
    finally:
        nginx.stop()


# --- Through nginx to a real collector and database --------------------------------------------


def test_events_through_nginx_land_in_the_database(collector_factory, db, tmp_path):
    from collector.app import CollectorConfig

    # /metrics is guarded by the collector's own bearer token where the collector has one.
    token_args: list[str] = []
    scrape: dict[str, str] = {}
    if "metrics_token" in {f.name for f in dataclasses.fields(CollectorConfig)}:
        token_args = ["--metrics-token", "scrape-secret"]
        scrape = {"Authorization": "Bearer scrape-secret"}
    collector = collector_factory(allowed_origins=[ORIGIN], extra_args=token_args)
    nginx = Nginx(tmp_path, collector.port).start()
    try:
        events = batch(3)
        with nginx.client() as client:
            r = client.post("/v1/events", content=gzip.compress(orjson.dumps(events)),
                            headers={"X-Write-Key": collector.write_key, "Origin": ORIGIN,
                                     "Content-Encoding": "gzip"})
            assert r.status_code == 202, r.text
            assert r.json() == {"accepted": 3, "rejected": []}
            assert r.headers["access-control-allow-origin"] == ORIGIN

            preflight = client.options("/v1/events", headers={
                "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == ORIGIN

            tracker = client.get("/v1/tracker.js")
            assert tracker.status_code == 200 and b"crm" in tracker.content
            assert tracker.headers["cache-control"] == "public, max-age=300"

            assert client.get("/healthz").json()["status"] == "ok"
            assert client.get("/metrics", headers=scrape).status_code == 403
        metrics = httpx.get(f"http://127.0.0.1:{nginx.internal_port}/metrics", headers=scrape,
                            timeout=10)
        assert metrics.status_code == 200 and "crm_requests_total" in metrics.text

        ids = [e["event_id"] for e in events]
        stored = db.execute(
            "SELECT count(*) FROM raw.events WHERE event_id = ANY(%s::uuid[])", (ids,)
        ).fetchone()[0]
        assert stored == 3
    finally:
        nginx.stop()
