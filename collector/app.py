"""The HTTP collector: POST /v1/events and friends (Starlette on uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import gc
import logging
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from collector import http_limits, metrics
from collector.body import BadEncoding, PayloadTooLarge, decode, read_limited
from collector.openapi import build_openapi
from collector.storage import Submission
from collector.validation import (
    MAX_EVENT_BYTES,
    BodyError,
    Event,
    Rejection,
    parse_body,
    validate_events,
)
from collector.writer import DatabaseUnavailable, EventWriter
from crm import keys
from crm.keys import WriteKey

TRACKER_PATH = Path(__file__).parent / "static" / "tracker.js"
KEY_CACHE_SECONDS = 10.0
# Items validated between two returns to the event loop: a large batch must not stall
# /healthz or other clients for longer than about a millisecond at a time.
VALIDATION_SLICE = 200
log = logging.getLogger("collector")


@dataclass
class CollectorConfig:
    """Every limit a request meets; each is a `crm collector` option (docs/collector.md)."""

    database_url: str
    max_body_bytes: int = 1_000_000  # after gzip decoding too
    max_batch_events: int = 1_000  # items per request
    max_event_bytes: int = MAX_EVENT_BYTES  # one event as JSON
    max_listed_rejections: int = 100  # rejections stored and answered one by one
    body_timeout_seconds: float = 10.0  # the whole body, from the end of the head
    head_timeout_seconds: float = 10.0
    max_head_bytes: int = 16 * 1024
    max_headers: int = 100
    keepalive_seconds: float = 5.0
    max_connections: int = 2_000
    metrics_token: str | None = None  # /metrics answers 404 without one
    max_wait_ms: float = 2.0
    max_flush_events: int = 1_000
    retry_after_seconds: int = 1


def _json(body: object, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    metrics.REQUESTS.labels(str(status)).inc()
    return _json({"error": message}, status, headers)


class KeyStore:
    """Write-key lookups, cached briefly so a revocation takes effect within seconds."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._cache: dict[str, tuple[WriteKey | None, float]] = {}
        self._origins: tuple[frozenset[str], float] = (frozenset(), 0.0)
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(
                self.database_url, autocommit=True, connect_timeout=3
            )
        return self._conn

    async def _query(self, fn):
        async with self._lock:
            # A connection idle across a database restart fails on first use: that failure
            # says nothing about the server now, so try once more on a fresh connection.
            for attempt in (1, 2):
                stale = self._conn is not None
                try:
                    return await fn(await self._connection())
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    if self._conn is not None:
                        await self._conn.close()
                    self._conn = None
                    if attempt == 2 or not stale:
                        raise DatabaseUnavailable(str(exc)) from exc

    async def get(self, key: str) -> WriteKey | None:
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit and hit[1] > now:
            return hit[0]
        try:
            found = await self._query(lambda conn: keys.lookup(conn, key))
        except DatabaseUnavailable:
            if hit:  # keep serving known keys while the database is away
                return hit[0]
            raise
        if len(self._cache) > 10_000:  # junk keys must not grow memory without bound
            self._cache.clear()
        self._cache[key] = (found, now + KEY_CACHE_SECONDS)
        return found

    async def any_allows(self, origin: str) -> bool:
        """For CORS preflights, which carry no key: is this origin allowed by some key?"""
        origins, expires = self._origins
        if expires < time.monotonic():

            async def fetch(conn: psycopg.AsyncConnection) -> frozenset[str]:
                cur = await conn.execute(
                    "SELECT DISTINCT unnest(allowed_origins) FROM ops.write_keys "
                    "WHERE revoked_at IS NULL"
                )
                return frozenset(o for (o,) in await cur.fetchall())

            origins = await self._query(fetch)
            self._origins = (origins, time.monotonic() + KEY_CACHE_SECONDS)
        return "*" in origins or origin.rstrip("/") in origins

    async def ping(self) -> None:
        await self._query(lambda conn: conn.execute("SELECT 1"))

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


async def _validate(
    items: list, received_at: dt.datetime, max_event_bytes: int
) -> tuple[list[Event], list[Rejection]]:
    """`validate_events` in slices, yielding to the event loop between them."""
    if len(items) <= VALIDATION_SLICE:
        return validate_events(items, received_at, max_event_bytes=max_event_bytes)
    events: list[Event] = []
    rejections: list[Rejection] = []
    for start in range(0, len(items), VALIDATION_SLICE):
        await asyncio.sleep(0)
        ev, rej = validate_events(items[start : start + VALIDATION_SLICE], received_at,
                                  max_event_bytes=max_event_bytes)
        for e in ev:
            e.index += start
        for r in rej:
            r.index += start
        events += ev
        rejections += rej
    return events, rejections


def _drop_repeats(events: list[Event]) -> tuple[list[Event], list[dict[str, int]]]:
    """An event sent twice in one request is stored once and reported as a duplicate."""
    first: dict = {}
    kept: list[Event] = []
    duplicates: list[dict[str, int]] = []
    for e in events:
        seen = first.setdefault(e.event_id, e.index)
        if seen == e.index:
            kept.append(e)
        else:
            duplicates.append({"index": e.index, "duplicate_of": seen})
    return kept, duplicates


def _cap(rejections: list[Rejection], limit: int) -> tuple[list[Rejection], int]:
    """At most `limit` rejections are stored and answered one by one; one summary row (index
    -1) stands for the rest, so junk cannot grow the answer or the table beyond its size."""
    if len(rejections) <= limit:
        return rejections, 0
    omitted = len(rejections) - limit
    summary = Rejection(-1, [f"{omitted} more rejected items in this request, not stored one "
                             f"by one (first index {rejections[limit].index})"], None)
    return [*rejections[:limit], summary], omitted


class _ServerErrorCounter:
    """Counts every 5xx answer (and turns an unexpected exception into a counted 500)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def counting_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 500:
                    metrics.SERVER_ERRORS.labels(str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            log.exception("unexpected error answering %s", scope.get("path"))
            if scope.get("path") == "/v1/events":
                metrics.REQUESTS.labels("500").inc()
            if not started:
                await _json({"error": "internal error"}, 500)(scope, receive, counting_send)
            else:
                metrics.SERVER_ERRORS.labels("500").inc()


def _cors_headers(origin: str) -> dict[str, str]:
    # Retry-After must be exposed, or the tracker cannot honour it on a 503.
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": "Retry-After",
        "Vary": "Origin",
    }


def create_app(config: CollectorConfig) -> _ServerErrorCounter:
    http_limits.configure(http_limits.HttpLimits(
        max_head_bytes=config.max_head_bytes, max_headers=config.max_headers,
        head_timeout=config.head_timeout_seconds,
    ))
    writer = EventWriter(
        config.database_url,
        max_wait=config.max_wait_ms / 1000,
        max_events=config.max_flush_events,
        retry_after=config.retry_after_seconds,
    )
    key_store = KeyStore(config.database_url)
    retry = {"Retry-After": str(config.retry_after_seconds)}
    tracker_js = _load_tracker()
    openapi = orjson.dumps(build_openapi())

    async def post_events(request: Request) -> Response:
        origin = request.headers.get("origin")
        cors = _cors_headers(origin) if origin else {}
        key = request.headers.get("x-write-key") or request.query_params.get("write_key")
        if not key:
            return _error(401, "missing write key: send header X-Write-Key or ?write_key=", cors)
        try:
            write_key = await key_store.get(key)
        except DatabaseUnavailable:
            return _error(503, "database unreachable, retry later", {**retry, **cors})
        if write_key is None:
            return _error(401, "unknown or revoked write key", cors)
        if origin and not write_key.allows_origin(origin):
            return _error(403, f"origin {origin} is not allowed for this write key")

        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > config.max_body_bytes:
            return _error(413, f"body larger than {config.max_body_bytes} bytes", cors)
        try:
            async with asyncio.timeout(config.body_timeout_seconds):
                raw = await read_limited(request.stream(), config.max_body_bytes)
            body = decode(raw, request.headers.get("content-encoding"), config.max_body_bytes)
            items = parse_body(body)
        except PayloadTooLarge as exc:
            return _error(413, str(exc), cors)
        except (BadEncoding, BodyError) as exc:
            return _error(400, str(exc), cors)
        except TimeoutError:  # slow or short body (less than its Content-Length)
            return _error(408, f"body not received within {config.body_timeout_seconds:g} s",
                          {**cors, "Connection": "close"})
        except ClientDisconnect:  # the client went away: nobody to answer
            metrics.CLIENT_DISCONNECTS.inc()
            return Response(status_code=400)
        if len(items) > config.max_batch_events:
            return _error(413, f"{len(items)} events in one request; at most "
                               f"{config.max_batch_events} (send several requests)", cors)

        received_at = dt.datetime.now(dt.UTC)
        events, rejections = await _validate(items, received_at, config.max_event_bytes)
        events, duplicates = _drop_repeats(events)
        listed, omitted = _cap(rejections, config.max_listed_rejections)
        source = f"http:{write_key.name}"
        sub = Submission(events, listed, source, received_at)
        try:
            await writer.submit(sub)
        except DatabaseUnavailable:
            return _error(503, "database unreachable, retry later", {**retry, **cors})
        metrics.EVENTS_ACCEPTED.inc(len(events) - len(sub.refused))
        metrics.EVENTS_REJECTED.inc(len(rejections) + len(sub.refused))
        metrics.EVENTS_DUPLICATE.inc(len(duplicates))
        metrics.REQUESTS.labels("202").inc()
        answer: dict = {
            "accepted": len(events) - len(sub.refused),
            "rejected": [{"index": r.index, "errors": r.errors}
                         for r in sorted(listed + sub.refused, key=lambda r: r.index)
                         if r.index >= 0],  # not the summary of omitted ones
        }
        if omitted:
            answer["rejected_omitted"] = omitted
        if duplicates:
            answer["duplicates"] = duplicates
        return _json(answer, 202, cors)

    async def preflight(request: Request) -> Response:
        origin = request.headers.get("origin", "")
        allowed = False
        with contextlib.suppress(DatabaseUnavailable):
            key = request.query_params.get("write_key")
            if key:
                found = await key_store.get(key)
                allowed = found is not None and found.allows_origin(origin)
            else:
                allowed = await key_store.any_allows(origin)
        if not origin or not allowed:
            return Response(status_code=403)
        return Response(
            status_code=204,
            headers={
                **_cors_headers(origin),
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type, Content-Encoding, X-Write-Key",
                "Access-Control-Max-Age": "86400",
            },
        )

    async def healthz(request: Request) -> Response:
        try:
            await asyncio.wait_for(key_store.ping(), timeout=3)
        except (DatabaseUnavailable, TimeoutError):
            metrics.DATABASE_UP.set(0)
            return _json({"status": "unavailable", "database": "unreachable"}, 503, retry)
        metrics.DATABASE_UP.set(1)
        return _json({"status": "ok", "database": "reachable"}, 200)

    async def metrics_endpoint(request: Request) -> Response:
        # The write key is public, so the scrape endpoint has a token of its own.
        if not config.metrics_token:
            return _json({"error": "metrics are off: start the collector with a metrics token"},
                         404)
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), config.metrics_token.encode()):
            return _json({"error": "metrics need Authorization: Bearer <metrics token>"}, 401,
                         {"WWW-Authenticate": "Bearer"})
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # several worker processes
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def tracker(request: Request) -> Response:
        return Response(
            tracker_js,
            media_type="application/javascript",
            headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
        )

    async def openapi_doc(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        # Everything loaded so far lives as long as the process: keep it out of the garbage
        # collector's scans, which otherwise grow with every request's short-lived objects.
        gc.freeze()
        await writer.start()
        try:
            yield
        finally:
            await writer.close()
            await key_store.close()

    app = Starlette(
        routes=[
            Route("/v1/events", post_events, methods=["POST"]),
            Route("/v1/events", preflight, methods=["OPTIONS"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/v1/tracker.js", tracker, methods=["GET"]),
            Route("/openapi.json", openapi_doc, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    # Never answer /v1/events/ with a redirect: its Location would echo the Host header.
    app.router.redirect_slashes = False
    return _ServerErrorCounter(app)


def _load_tracker() -> bytes:
    source = TRACKER_PATH.read_text() if TRACKER_PATH.exists() else ""
    try:
        import rjsmin

        return rjsmin.jsmin(source).encode()
    except ImportError:
        return source.encode()


def app_from_environment() -> _ServerErrorCounter:
    """App factory for worker processes: the parent passes its config in the environment."""
    return create_app(CollectorConfig(**orjson.loads(os.environ["CRM_COLLECTOR_CONFIG"])))


def serve(config: CollectorConfig, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    options = dict(
        host=host, port=port, loop="uvloop", http=http_limits.PROTOCOL, access_log=False,
        log_level="warning", timeout_graceful_shutdown=10,
        timeout_keep_alive=config.keepalive_seconds, limit_concurrency=config.max_connections,
    )
    if workers == 1:
        uvicorn.run(create_app(config), **options)
        return
    # Several processes share the port; each has its own group-commit writer. Metrics are
    # aggregated across them through prometheus_client's multiprocess mode.
    with tempfile.TemporaryDirectory(prefix="crm-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        os.environ["CRM_COLLECTOR_CONFIG"] = orjson.dumps(dataclasses.asdict(config)).decode()
        uvicorn.run("collector.app:app_from_environment", factory=True, workers=workers,
                    **options)
