"""The collector over real HTTP against a real PostgreSQL: shapes, errors, auth, CORS."""

from __future__ import annotations

import datetime as dt
import gzip
import uuid

import httpx
import orjson
import psycopg
import pytest

from crm import keys
from tests.events import batch, page_view


def count(db: psycopg.Connection, sql: str, *params) -> int:
    return db.execute(sql, params).fetchone()[0]


def test_accepts_one_event_an_array_and_a_batch_object(collector, db):
    one, arr, obj = page_view(), batch(3), batch(2)
    for body, n in ((one, 1), (arr, 3), ({"batch": obj}, 2)):
        r = collector.post(body)
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": n, "rejected": []}
    ids = [e["event_id"] for e in [one, *arr, *obj]]
    assert count(db, "SELECT count(*) FROM raw.events WHERE event_id = ANY(%s::uuid[])", ids) == 6


def test_stored_row_has_envelope_columns_and_original_payload(collector, db):
    event = page_view(
        event="page_visit",  # the original spec's name, an alias of page_view
        timestamp="2024-12-07T13:00:00+03:00",
        user_id=42,
        email="  Jane.Doe@Example.COM ",
        push_token="TOKEN123456",
        utm_campaign="winter",  # unknown fields are kept
    )
    assert collector.post(event).status_code == 202
    row = db.execute(
        "SELECT event_type, event_ts, user_id, email, push_token, source, payload, received_at "
        "FROM raw.events WHERE event_id = %s",
        (event["event_id"],),
    ).fetchone()
    event_type, event_ts, user_id, email, token, source, payload, received_at = row
    assert event_type == "page_view"
    assert event_ts == dt.datetime(2024, 12, 7, 10, 0, tzinfo=dt.UTC)
    assert (user_id, email, token) == ("42", "jane.doe@example.com", "TOKEN123456")
    assert source.startswith("http:test-")
    assert payload == event  # the original, as sent
    assert abs(received_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_partial_batch_stores_valid_events_and_records_rejected_ones(collector, db):
    good = batch(2)
    bad_type = page_view(page_url=12345)
    unknown = page_view(event="teleport")
    bad_ts = page_view(timestamp="yesterday at noon")
    no_ids = page_view()
    del no_ids["client_id"]
    body = [good[0], bad_type, unknown, good[1], bad_ts, no_ids, "not an object"]
    r = collector.post(body)
    assert r.status_code == 202
    result = r.json()
    assert result["accepted"] == 2
    rejected = {x["index"]: " ".join(x["errors"]) for x in result["rejected"]}
    assert sorted(rejected) == [1, 2, 4, 5, 6]
    assert "page_url" in rejected[1]
    assert "teleport" in rejected[2]
    assert "timestamp" in rejected[4]
    assert "client_id" in rejected[5]
    stored = db.execute(
        "SELECT batch_index, errors, payload FROM raw.rejected_events "
        "WHERE source = %s ORDER BY batch_index",
        (f"http:{_key_name(db, collector.write_key)}",),
    ).fetchall()
    assert [s[0] for s in stored] == [1, 2, 4, 5, 6]
    assert stored[1][2] == unknown and stored[4][2] == "not an object"
    assert all(s[1] for s in stored)
    ids = [good[0]["event_id"], good[1]["event_id"]]
    assert count(db, "SELECT count(*) FROM raw.events WHERE event_id = ANY(%s::uuid[])", ids) == 2


def _key_name(db: psycopg.Connection, key: str) -> str:
    return db.execute(
        "SELECT name FROM ops.write_keys WHERE key_hash = %s", (keys.hash_key(key),)
    ).fetchone()[0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x00\xff\xfe junk", "JSON"),
        (b'{"batch": [', "JSON"),
        (b"42", ""),
        (b"[]", ""),
        (b'{"batch": "nope"}', "batch"),
    ],
)
def test_bodies_that_are_not_events_get_400(collector, body, message):
    r = httpx.post(f"{collector.url}/v1/events", content=body,
                   headers={"X-Write-Key": collector.write_key})
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_missing_unknown_and_revoked_keys_get_401(collector, database_url):
    url = f"{collector.url}/v1/events"
    assert httpx.post(url, json=page_view()).status_code == 401
    r = httpx.post(url, json=page_view(), headers={"X-Write-Key": "wk_nonsense"})
    assert r.status_code == 401 and "unknown" in r.json()["error"]
    name = f"revoked-{uuid.uuid4().hex[:6]}"
    revoked = keys.create(database_url, name)
    assert keys.revoke(database_url, name)
    assert httpx.post(url, json=page_view(), headers={"X-Write-Key": revoked}).status_code == 401
    # The key may also travel in the query string (sendBeacon cannot set headers).
    r = httpx.post(f"{url}?write_key={collector.write_key}", content=orjson.dumps(page_view()),
                   headers={"Content-Type": "text/plain"})
    assert r.status_code == 202


def test_size_limit_gzip_and_gzip_bomb(collector, db):
    key = {"X-Write-Key": collector.write_key}
    url = f"{collector.url}/v1/events"
    big = orjson.dumps(batch(1, page_url="https://shop.example/" + "x" * 1_100_000))
    r = httpx.post(url, content=big, headers=key)
    assert r.status_code == 413
    events = batch(50)
    r = httpx.post(url, content=gzip.compress(orjson.dumps(events)),
                   headers={**key, "Content-Encoding": "gzip"})
    assert r.status_code == 202 and r.json()["accepted"] == 50
    # 100 MB of zeros compresses to ~100 KB: it must be refused without inflating it all.
    bomb = gzip.compress(b"[" + b" " * 100_000_000 + b"]", compresslevel=9)
    assert len(bomb) < 1_000_000
    r = httpx.post(url, content=bomb, headers={**key, "Content-Encoding": "gzip"})
    assert r.status_code == 413
    r = httpx.post(url, content=b"not gzip at all", headers={**key, "Content-Encoding": "gzip"})
    assert r.status_code == 400


def test_retried_events_are_stored_once(collector_factory, db):
    c = collector_factory()
    events = batch(5)
    for _ in range(3):
        assert c.post(events).json()["accepted"] == 5
    # Twice in one batch, and once more after a restart of the collector.
    assert c.post([events[0], events[0]]).status_code == 202
    c.stop()
    c.start()
    assert c.post(events[:2]).status_code == 202
    ids = [e["event_id"] for e in events]
    assert count(db, "SELECT count(*) FROM raw.events WHERE event_id = ANY(%s::uuid[])", ids) == 5


def test_events_without_an_id_get_a_stable_one(collector, db):
    event = page_view()
    del event["event_id"]
    assert collector.post(event).status_code == 202
    assert collector.post(event).status_code == 202  # same content: the same derived id
    rows = db.execute(
        "SELECT event_id FROM raw.events WHERE client_id = %s", (event["client_id"],)
    ).fetchall()
    assert len(rows) == 1 and isinstance(rows[0][0], uuid.UUID)


def _partitions(db: psycopg.Connection) -> set[str]:
    return {p for (p,) in db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'raw.events'::regclass")}


def test_timestamps_on_many_days_create_no_partitions(collector, db):
    """Partitions follow the received day: a request naming 1,000 distinct days (the most one
    request may carry), from 1997 to 200 days ahead, creates none and lands in today's."""
    before = _partitions(db)
    now = dt.datetime.now(dt.UTC)
    days = [now - dt.timedelta(days=d) for d in range(1, 998)]
    days += [dt.datetime(1997, 3, 14, 9, 30, tzinfo=dt.UTC), now + dt.timedelta(days=200), now]
    events = [page_view(timestamp=d.isoformat()) for d in days]
    r = collector.post(events)
    assert r.json() == {"accepted": 1000, "rejected": []}
    assert _partitions(db) - before <= {f"events_{dt.datetime.now(dt.UTC):%Y%m%d}"}
    ids = [e["event_id"] for e in events]
    homes = {t for (t,) in db.execute(
        "SELECT DISTINCT tableoid::regclass::text FROM raw.events WHERE event_id = ANY(%s::uuid[])",
        (ids,))}
    assert len(homes) == 1 and homes <= {f"raw.events_{r_day:%Y%m%d}" for r_day in
                                         (now, dt.datetime.now(dt.UTC))}


def test_cors_per_write_key(collector_factory):
    c = collector_factory(allowed_origins=["https://shop.example"])
    url = f"{c.url}/v1/events?write_key={c.write_key}"
    pre = httpx.options(url, headers={"Origin": "https://shop.example",
                                      "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://shop.example"
    assert httpx.options(url, headers={"Origin": "https://evil.example"}).status_code == 403
    ok = httpx.post(url, content=orjson.dumps(page_view()),
                    headers={"Origin": "https://shop.example", "Content-Type": "text/plain"})
    assert ok.status_code == 202
    assert ok.headers["access-control-allow-origin"] == "https://shop.example"
    denied = httpx.post(url, content=orjson.dumps(page_view()),
                        headers={"Origin": "https://evil.example"})
    assert denied.status_code == 403


METRICS_TOKEN = "scrape-secret-123"


def _scrape(c, token: str | None = METRICS_TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{c.url}/metrics", headers=headers)


def _metric(text: str, name: str) -> float:
    """Sum of a metric's samples (over labels and worker processes)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{")))


def test_health_metrics_tracker_and_openapi(collector_factory):
    c = collector_factory(extra_args=["--metrics-token", METRICS_TOKEN])
    assert httpx.get(f"{c.url}/healthz").json()["database"] == "reachable"
    assert c.post(batch(3)).status_code == 202
    assert c.post([page_view(event="teleport")]).status_code == 202
    text = _scrape(c).text
    # Exactly what this process served: a fresh process would show zeros.
    assert _metric(text, "crm_events_accepted_total") == 3
    assert _metric(text, "crm_events_rejected_total") == 1
    assert _metric(text, "crm_flush_events_count") >= 1
    assert "crm_flush_seconds_bucket" in text
    js = httpx.get(f"{c.url}/v1/tracker.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert 0 < len(js.content) < 5_000
    doc = httpx.get(f"{c.url}/openapi.json").json()
    assert "/v1/events" in doc["paths"]


def test_metrics_need_their_own_token_and_name_no_keys(collector_factory, collector):
    c = collector_factory(extra_args=["--metrics-token", METRICS_TOKEN])
    assert c.post(batch(2)).status_code == 202
    assert _scrape(c, None).status_code == 401
    assert _scrape(c, "wrong").status_code == 401
    assert _scrape(c, c.write_key).status_code == 401  # the public key opens nothing else
    text = _scrape(c).text
    key_name = c.write_key  # neither the key nor its name appear
    assert key_name not in text and "test-" not in text and "http:" not in text
    assert _scrape(collector).status_code == 404  # no token configured: no metrics at all


def test_several_worker_processes_share_the_port_and_the_metrics(collector_factory, db):
    c = collector_factory(extra_args=["--workers", "2", "--metrics-token", METRICS_TOKEN])
    events = batch(60)
    with httpx.Client(headers={"X-Write-Key": c.write_key}) as http:
        for i in range(0, 60, 3):  # new connections, spread over both workers by the kernel
            r = http.post(f"{c.url}/v1/events", json=events[i : i + 3],
                          headers={"Connection": "close"})
            assert r.status_code == 202
    ids = [e["event_id"] for e in events]
    assert count(db, "SELECT count(*) FROM raw.events WHERE event_id = ANY(%s::uuid[])", ids) == 60
    text = _scrape(c).text
    # summed over both processes, whichever one answered the scrape
    assert _metric(text, "crm_events_accepted_total") == 60
