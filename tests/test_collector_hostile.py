"""The collector under hostile traffic: the write key is public, so any request may be junk.

One request's content may fail only that request, or only its bad events (named in
`rejected`); no request costs more than its size; nothing acknowledged is lost. Each test
here is one probe an attacker would try, against a real collector process and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import orjson
import psycopg
import pytest

from collector.app import VALIDATION_SLICE, _validate
from crm import keys
from crm.db.migrate import migrate
from tests.conftest import CollectorProcess, free_port
from tests.events import batch, page_view

TOKEN = "hostile-metrics-token"
FAST = ["--head-timeout", "1", "--body-timeout", "1", "--metrics-token", TOKEN]


@pytest.fixture
def guarded(collector_factory):
    """A collector with short head and body deadlines, so slow-client probes finish fast."""
    return collector_factory(extra_args=FAST)


def stored(db: psycopg.Connection, events: list[dict]) -> int:
    ids = [e["event_id"] for e in events]
    return db.execute(
        "SELECT count(*) FROM raw.events WHERE event_id = ANY(%s::uuid[])", (ids,)
    ).fetchone()[0]


def rejected_rows(db: psycopg.Connection, source: str) -> list[tuple]:
    return db.execute(
        "SELECT batch_index, errors, payload, raw_text FROM raw.rejected_events "
        "WHERE source = %s ORDER BY rejected_id", (source,)
    ).fetchall()


def key_source(db: psycopg.Connection, write_key: str) -> str:
    return "http:" + db.execute(
        "SELECT name FROM ops.write_keys WHERE key_hash = encode(sha256(%s::bytea), 'hex')",
        (write_key.encode(),),
    ).fetchone()[0]


def post_raw(c, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{c.url}/v1/events", content=body,
                      headers={"X-Write-Key": c.write_key, **headers}, timeout=30)


def metric(c, name: str) -> float:
    text = httpx.get(f"{c.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{")))


def with_deep_field(event: dict, levels: int) -> bytes:
    """`event` as JSON with a field nested `levels` deep (built as text: JSON encoders stop
    far earlier than the parser's 1,024 levels)."""
    nested = b'{"d":' * levels + b'"bottom"' + b"}" * levels
    return orjson.dumps(event)[:-1] + b',"extra":' + nested + b"}"


# --- content that PostgreSQL cannot store -------------------------------------------------


@pytest.mark.parametrize("where", ["extra field", "client_id", "object key", "nested list"])
def test_nul_character_is_a_named_rejection(guarded, db, where):
    bad = {
        "extra field": page_view(note="a\u0000b"),
        "client_id": page_view(client_id="CID\u0000123456"),
        "object key": page_view(**{"k\u0000ey": 1}),
        "nested list": page_view(tags=["ok", {"x": "\u0000"}]),
    }[where]
    good = batch(2)
    r = guarded.post([good[0], bad, good[1]])
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 2
    [rej] = body["rejected"]
    assert rej["index"] == 1 and "NUL character" in rej["errors"][0]
    assert stored(db, good) == 2 and stored(db, [bad]) == 0
    [(index, errors, payload, raw_text)] = rejected_rows(db, key_source(db, guarded.write_key))
    assert index == 1 and "NUL" in errors[0]
    assert payload is None and "\\u0000" in raw_text  # kept, escaped, for inspection


def test_nul_in_an_event_rejected_for_another_reason_is_stored_too(guarded, db):
    bad = page_view(event="teleport", note="\u0000")
    r = guarded.post([bad])
    assert r.status_code == 202 and r.json()["rejected"][0]["index"] == 0
    [(_, errors, payload, raw_text)] = rejected_rows(db, key_source(db, guarded.write_key))
    assert "unknown event type" in errors[0] and payload is None and "\\u0000" in raw_text


@pytest.mark.parametrize("levels", [255, 600, 1000])
def test_excessive_depth_is_a_named_rejection(guarded, db, levels):
    bad, good = page_view(), page_view()
    r = post_raw(guarded, b"[" + with_deep_field(bad, levels) + b"," + orjson.dumps(good) + b"]")
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1
    assert r.json()["rejected"][0]["errors"] == ["extra: nested deeper than 254 levels"]
    assert stored(db, [good]) == 1 and stored(db, [bad]) == 0


def test_bad_requests_never_cost_concurrent_valid_ones(guarded, db):
    """400 valid requests interleaved with 40 that carry NUL or deep nesting, from 8
    clients: every valid request is answered 202 and every valid event stored once."""
    valid = [batch(3) for _ in range(400)]
    hostile = [orjson.dumps([page_view(note="x\u0000")]) if i % 2
               else b"[" + with_deep_field(page_view(), 400) + b"]" for i in range(40)]
    jobs = [("ok", orjson.dumps(b)) for b in valid]
    for i, h in enumerate(hostile):
        jobs.insert(i * 10, ("bad", h))

    def send(job):
        kind, body = job
        with httpx.Client(headers={"X-Write-Key": guarded.write_key}, timeout=30) as http:
            return kind, http.post(f"{guarded.url}/v1/events", content=body)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, jobs))
    assert [r.status_code for _, r in results] == [202] * len(results)
    for kind, r in results:
        expected = {"ok": (3, 0), "bad": (0, 1)}[kind]
        assert (r.json()["accepted"], len(r.json()["rejected"])) == expected
    events = [e for b in valid for e in b]
    assert stored(db, events) == len(events)
    assert db.execute(
        "SELECT count(*) FROM raw.events WHERE event_id = ANY(%s::uuid[]) "
        "GROUP BY event_id HAVING count(*) > 1", ([e["event_id"] for e in events],)
    ).fetchall() == []


# --- bounded cost -------------------------------------------------------------------------


def test_a_megabyte_of_junk_items_is_refused_whole_and_fast(guarded, db):
    body = b"[" + b",".join([b"0"] * 499_999) + b"]"
    started = time.monotonic()
    r = post_raw(guarded, body)
    assert r.status_code == 413 and "at most 1000" in r.json()["error"]
    assert time.monotonic() - started < 5 and len(r.content) < 200
    assert rejected_rows(db, key_source(db, guarded.write_key)) == []


def test_rejections_are_capped_and_summarised(guarded, db):
    junk = [0] * 999 + [page_view()]
    r = guarded.post(junk)
    body = r.json()
    assert r.status_code == 202 and body["accepted"] == 1
    assert len(body["rejected"]) == 100 and body["rejected_omitted"] == 899
    assert len(r.content) < 10_000
    rows = rejected_rows(db, key_source(db, guarded.write_key))
    assert len(rows) == 101
    assert rows[-1][0] is None and "899 more rejected items" in rows[-1][1][0]


def test_events_per_request_limit_is_exact(collector_factory, db):
    c = collector_factory(extra_args=["--max-batch-events", "5"])
    five, six = batch(5), batch(6)
    assert c.post(five).json() == {"accepted": 5, "rejected": []}
    r = c.post(six)
    assert r.status_code == 413 and "at most 5" in r.json()["error"]
    assert stored(db, six) == 0


def test_an_oversized_event_is_a_named_rejection(guarded, db):
    big, small = page_view(blob="x" * 40_000), page_view()
    r = guarded.post([big, small])
    assert r.json()["accepted"] == 1
    assert "over the limit of 32768 per event" in r.json()["rejected"][0]["errors"][0]
    assert stored(db, [big]) == 0


def test_big_bodies_do_not_stall_health_checks(guarded):
    """Four near-limit bodies at once: /healthz keeps answering in well under a second."""
    bodies = [orjson.dumps(batch(1000, page_url="https://shop.example/" + "p" * 700))
              for _ in range(4)]
    assert all(len(b) < 1_000_000 for b in bodies)
    worst = 0.0
    done = threading.Event()

    def probe():
        nonlocal worst
        with httpx.Client(timeout=10) as http:
            while not done.is_set():
                t = time.monotonic()
                assert http.get(f"{guarded.url}/healthz").status_code == 200
                worst = max(worst, time.monotonic() - t)
                time.sleep(0.01)

    with ThreadPoolExecutor(5) as pool:
        watcher = pool.submit(probe)
        answers = list(pool.map(lambda b: post_raw(guarded, b), bodies))
        done.set()
        watcher.result()
    assert [a.json()["accepted"] for a in answers] == [1000] * 4
    assert worst < 1.0, f"/healthz took {worst:.2f} s while big bodies were validated"


def test_big_batches_are_validated_in_slices_that_yield():
    """The event loop runs between slices of a large batch, so one request's validation
    never holds it for the whole batch."""
    items = batch(1000)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def main() -> int:
        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        events, _ = await _validate(items, dt.datetime.now(dt.UTC), 32_768)
        task.cancel()
        assert len(events) == 1000
        return ticks - before

    assert asyncio.run(main()) >= 1000 // VALIDATION_SLICE - 1


# --- honest bodies ------------------------------------------------------------------------


def test_every_gzip_member_is_decoded(guarded, db):
    a, b = page_view(), page_view()
    text = orjson.dumps([a, b])  # split across two members, as `cat a.gz b.gz` makes
    body = gzip.compress(text[:50]) + gzip.compress(text[50:])
    r = post_raw(guarded, body, **{"Content-Encoding": "gzip"})
    assert r.json() == {"accepted": 2, "rejected": []}
    assert stored(db, [a, b]) == 2


@pytest.mark.parametrize(("damage", "named"), [
    ("truncated", "truncated"), ("trailing garbage", "8 bytes of trailing data"),
    ("no trailer", "truncated"),
])
def test_damaged_gzip_is_refused(guarded, db, damage, named):
    event = page_view()
    good = gzip.compress(orjson.dumps([event]))
    body = {"truncated": good[: len(good) // 2], "trailing garbage": good + b"garbage!",
            "no trailer": good[:-8]}[damage]
    r = post_raw(guarded, body, **{"Content-Encoding": "gzip"})
    assert r.status_code == 400 and named in r.json()["error"], r.text
    assert stored(db, [event]) == 0


@pytest.mark.parametrize("number", [
    "123456789012345678901234567890", "-9223372036854775809", "1.0000000000000000000001",
    "123456789012345.67890", "1e-400",
])
def test_numbers_that_would_change_are_named_rejections(guarded, db, number):
    event = page_view()
    good = page_view()
    body = orjson.dumps([event, good]).replace(b'"event":"page_view"',
                                               b'"amount":' + number.encode()
                                               + b',"event":"page_view"', 1)
    r = post_raw(guarded, body)
    assert r.json()["accepted"] == 1
    assert r.json()["rejected"][0]["errors"][0].startswith(f"amount: number {number} cannot")
    assert stored(db, [event]) == 0 and stored(db, [good]) == 1


def test_numbers_within_range_are_stored_exactly(guarded, db):
    event = page_view()
    numbers = {"u64": "18446744073709551615", "i64": "-9223372036854775808", "tenth": "0.1",
               "pi": "3.141592653589793", "big": "1.5e300"}
    extra = ",".join(f'"{k}":{v}' for k, v in numbers.items()).encode()
    body = orjson.dumps(event)[:-1] + b"," + extra + b"}"
    assert post_raw(guarded, body).json() == {"accepted": 1, "rejected": []}
    row = db.execute(
        "SELECT " + ", ".join(f"payload->>'{k}'" for k in numbers) +
        " FROM raw.events WHERE event_id = %s", (event["event_id"],)).fetchone()
    assert [Decimal(v) for v in row] == [Decimal(v) for v in numbers.values()]


def test_duplicate_keys_keep_the_last_value(guarded, db):
    event = page_view()
    body = orjson.dumps(event)[:-1] + b',"plan":"free","plan":"pro"}'
    assert post_raw(guarded, body).json()["accepted"] == 1
    assert db.execute("SELECT payload->>'plan' FROM raw.events WHERE event_id = %s",
                      (event["event_id"],)).fetchone()[0] == "pro"


def test_body_limit_is_exact_for_chunked_bodies(collector_factory, db):
    c = collector_factory(extra_args=["--max-body-bytes", "2000"])
    event = page_view()

    def padded(size: int) -> bytes:
        text = orjson.dumps([event])
        return text + b" " * (size - len(text))

    def chunked(body: bytes):
        for i in range(0, len(body), 300):
            yield body[i : i + 300]

    over = httpx.post(f"{c.url}/v1/events", content=chunked(padded(2001)),
                      headers={"X-Write-Key": c.write_key})
    assert over.status_code == 413
    assert stored(db, [event]) == 0  # nothing refused is stored
    exact = httpx.post(f"{c.url}/v1/events", content=chunked(padded(2000)),
                       headers={"X-Write-Key": c.write_key})
    assert exact.status_code == 202 and stored(db, [event]) == 1
    gz = gzip.compress(padded(2001))  # small on the wire, over the limit once decoded
    r = post_raw(c, gz, **{"Content-Encoding": "gzip"})
    assert len(gz) < 2000 and r.status_code == 413


# --- deduplication ------------------------------------------------------------------------


def test_one_source_cannot_shadow_another(collector_factory, database_url, db):
    first = collector_factory()
    other_key = keys.create(database_url, f"app-{uuid.uuid4().hex[:8]}")
    event = page_view()
    assert first.post(event).json()["accepted"] == 1
    r = httpx.post(f"{first.url}/v1/events", json=event, headers={"X-Write-Key": other_key})
    assert r.json() == {"accepted": 1, "rejected": []}
    sources = {s for (s,) in db.execute(
        "SELECT source FROM raw.events WHERE event_id = %s", (event["event_id"],))}
    assert len(sources) == 2  # each source's event is kept
    assert first.post(event).json()["accepted"] == 1  # a retry of either stays stored once
    assert stored(db, [event]) == 2


def test_duplicate_within_a_request_is_reported(guarded, db):
    a, b = page_view(), page_view()
    r = guarded.post([a, b, a])
    assert r.json() == {"accepted": 2, "rejected": [],
                        "duplicates": [{"index": 2, "duplicate_of": 0}]}
    assert stored(db, [a, b]) == 2


def test_retried_and_new_events_in_one_request_are_all_stored(guarded, db):
    old = batch(3)
    assert guarded.post(old).json()["accepted"] == 3
    new = batch(4)
    mixed = [new[0], old[1], new[1], new[2], old[0], new[3]]
    assert guarded.post(mixed).json() == {"accepted": 6, "rejected": []}
    assert stored(db, new) == 4 and stored(db, old) == 3


def test_concurrent_retries_and_new_events_in_one_flush(collector_factory, db):
    """Requests that share a group commit: retried events beside new ones in one flush."""
    c = collector_factory(extra_args=["--max-wait-ms", "50"])
    old = batch(10)
    assert c.post(old).json()["accepted"] == 10
    bodies = [[old[i], *batch(2)] for i in range(10)] + [old[:5]] * 5
    with ThreadPoolExecutor(15) as pool:
        answers = list(pool.map(c.post, bodies))
    assert all(a.status_code == 202 for a in answers)
    fresh = [e for body in bodies[:10] for e in body[1:]]
    assert stored(db, fresh) == 20 and stored(db, old) == 10


# --- HTTP limits ----------------------------------------------------------------------------


def raw_exchange(c, data: bytes, wait: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", c.port), timeout=wait) as s:
        s.sendall(data)
        return recv_all(s)


def recv_all(s: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def request_head(c, extra: bytes = b"", length: int = 2) -> bytes:
    return (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Write-Key: " + c.write_key.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(length).encode() + b"\r\n" + extra)


def test_oversized_head_and_too_many_headers_get_431(guarded, db):
    huge = request_head(guarded, b"X-Junk: " + b"a" * 10_000_000 + b"\r\n\r\n[]")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as s:
        # Refused before the 10 MB were all sent: that is the point.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(huge)
        answer = recv_all(s)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert time.monotonic() - started < 3
    # 10,000 headers, and 101 short ones (well within 16 KB): the count alone refuses both.
    for count in (10_000, 101):
        many = request_head(guarded, b"".join(b"X-H%d: 1\r\n" % i for i in range(count))
                            + b"\r\n[]")
        assert raw_exchange(guarded, many).startswith(b"HTTP/1.1 431"), count
    fine = request_head(guarded, b"".join(b"X-H%d: 1\r\n" % i for i in range(90)) + b"\r\n[]")
    assert raw_exchange(guarded, fine).startswith(b"HTTP/1.1 400")  # head accepted; body junk
    assert httpx.get(f"{guarded.url}/healthz").status_code == 200


def test_slow_head_slow_body_and_short_body_are_cut_off(guarded, db):
    started = time.monotonic()
    answer = raw_exchange(guarded, b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")  # head unfinished
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 4
    event = page_view()
    body = orjson.dumps([event])
    started = time.monotonic()
    short = raw_exchange(guarded, request_head(guarded, b"\r\n", len(body) + 10) + body)
    assert short.startswith(b"HTTP/1.1 408"), short[:200]
    assert time.monotonic() - started < 4
    assert stored(db, [event]) == 0
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=6) as s:
        assert recv_all(s) == b""  # an idle connection is closed, not kept
    assert time.monotonic() - started < 4


def test_no_redirect_built_from_host(guarded):
    r = httpx.post(f"{guarded.url}/v1/events/", json=page_view(),
                   headers={"X-Write-Key": guarded.write_key, "Host": "evil.example"})
    assert r.status_code == 404 and "location" not in r.headers


def test_client_disconnect_is_counted_quietly(database_url, tmp_path):
    log = tmp_path / "collector.log"
    write_key = keys.create(database_url, f"test-{uuid.uuid4().hex[:8]}")
    quiet = CollectorProcess(database_url, write_key, free_port(), FAST)
    with log.open("wb") as out:  # its output goes to a file, to be read for tracebacks
        quiet.proc = subprocess.Popen(
            [sys.executable, "-m", "crm", "collector", "--port", str(quiet.port), *FAST],
            env={**os.environ, "CRM_DATABASE_URL": database_url}, stderr=out, stdout=out)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{quiet.url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", quiet.port)) as s:
                    s.sendall(request_head(quiet, b"\r\n", 5000) + b'[{"event":')
                    time.sleep(0.2)
            time.sleep(0.5)
            assert metric(quiet, "crm_client_disconnects_total") == 3
        finally:
            quiet.stop()
    text = log.read_text()
    assert "Traceback" not in text and "Error" not in text, text


def test_server_errors_are_counted(database_url):
    """A database that vanishes turns into 503 with Retry-After, counted in /metrics."""
    name = f"gone_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = database_url.replace("/postgres?", f"/{name}?")
    migrate(url)
    c = CollectorProcess(url, keys.create(url, "doomed"), free_port(), FAST).start()
    try:
        assert c.post(page_view()).status_code == 202
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        r = c.post(page_view())
        assert r.status_code == 503 and r.headers["retry-after"]
        assert metric(c, "crm_server_errors_total") >= 1
        assert metric(c, "crm_flush_failures_total") >= 1
    finally:
        c.stop()
