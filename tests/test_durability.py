"""What the collector acknowledged survives: SIGKILL of the collector, restart of PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg

from tests.events import batch


def _stored(db: psycopg.Connection, ids: list[str]) -> dict[str, int]:
    rows = db.execute(
        "SELECT event_id::text, count(*) FROM raw.events WHERE event_id = ANY(%s::uuid[]) "
        "GROUP BY 1", (ids,)
    ).fetchall()
    return dict(rows)


def test_sigkill_right_after_acknowledgement_loses_nothing(collector, db):
    acked: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(headers={"X-Write-Key": collector.write_key}) as http:
            for _ in range(n):
                events = batch(20)
                r = http.post(f"{collector.url}/v1/events", json=events)
                assert r.status_code == 202
                with lock:
                    acked.extend(e["event_id"] for e in events)

    # .result() re-raises a worker's failed assertion here: a bare thread would only warn.
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(client, 10) for _ in range(4)]:
            future.result()
    collector.kill()  # SIGKILL the moment the last answer arrived: no graceful flush
    assert len(acked) == 800
    stored = _stored(db, acked)
    assert len(stored) == 800 and set(stored.values()) == {1}


def test_database_restart_during_load(collector, postgres):
    """Clients get 503 while PostgreSQL is down; after their retries every acknowledged
    event is present exactly once."""
    acked: list[str] = []
    sent: list[str] = []
    statuses: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(headers={"X-Write-Key": collector.write_key}, timeout=10) as http:
            while not stop.is_set():
                events = batch(25, client_id=f"load-{uuid.uuid4().hex[:6]}")
                with lock:
                    sent.extend(e["event_id"] for e in events)
                for _attempt in range(100):  # retry the same events, as a tracker does
                    try:
                        r = http.post(f"{collector.url}/v1/events", json=events)
                    except httpx.TransportError:
                        time.sleep(0.1)
                        continue
                    with lock:
                        statuses.append(r.status_code)
                    if r.status_code == 202:
                        with lock:
                            acked.extend(e["event_id"] for e in events)
                        break
                    assert r.status_code == 503, (r.status_code, r.text)
                    assert r.headers["retry-after"]
                    time.sleep(float(r.headers["retry-after"]) / 4)
                else:
                    raise AssertionError("a batch was never acknowledged after the restart")

    # The workers' failures are re-raised by .result() below, in the test's own thread.
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client) for _ in range(4)]
        try:
            time.sleep(1.5)
            postgres.stop(mode="fast")  # drops every connection mid-flight
            time.sleep(2.5)
            postgres.start()
            time.sleep(3)
        finally:
            stop.set()  # whatever happened, let the workers end
        for future in futures:
            future.result(timeout=60)
    assert 503 in statuses, "clients should have been told to retry"
    assert statuses.count(202) > 10
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        stored = _stored(conn, sent)
    assert set(acked) <= set(stored), "an acknowledged event is missing"
    assert set(stored.values()) == {1}, "an event was stored twice"
    health = httpx.get(f"{collector.url}/healthz")
    assert health.status_code == 200
