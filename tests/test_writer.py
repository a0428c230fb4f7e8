"""The storage layer on its own, against the real PostgreSQL: what it does when PostgreSQL
refuses rows that validation let through, and with retried events beside new ones."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import psycopg

from collector import storage
from collector.storage import Submission
from collector.validation import Event, validate_events
from tests.events import batch


def _events(n: int, **fields) -> list[Event]:
    events, rejections = validate_events(batch(n, **fields), dt.datetime.now(dt.UTC))
    assert not rejections
    return events


def _poisoned(event: Event) -> Event:
    """An event PostgreSQL refuses (jsonb cannot hold U+0000), as if validation had a gap."""
    return dataclasses.replace(event, payload_json='{"note": "\\u0000"}')


async def _write(url: str, subs: list[Submission]) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await storage.ensure_partitions(conn, storage.PartitionCache(),
                                        storage.received_days(subs))
        return await storage.write(conn, subs)


def _stored(db: psycopg.Connection, events: list[Event]) -> int:
    return db.execute("SELECT count(*) FROM raw.events WHERE event_id = ANY(%s)",
                      ([e.event_id for e in events],)).fetchone()[0]


def test_a_refused_row_costs_only_itself(database_url, clean_raw):
    now = dt.datetime.now(dt.UTC)
    good_a, good_b = _events(3), _events(4)
    mixed = _events(5)
    mixed[2] = _poisoned(mixed[2])
    subs = [Submission(good_a, [], "http:a", now), Submission(mixed, [], "http:b", now),
            Submission(good_b, [], "http:c", now)]
    stored = asyncio.run(_write(database_url, subs))
    assert stored == 3 + 4 + 4
    assert _stored(clean_raw, good_a + good_b) == 7
    assert _stored(clean_raw, mixed) == 4
    [refused] = subs[1].refused
    assert refused.index == mixed[2].index and refused.errors[0].startswith("storage: ")
    assert subs[0].refused == [] and subs[2].refused == []
    rows = clean_raw.execute("SELECT source, errors FROM raw.rejected_events").fetchall()
    assert [(s, e[0].startswith("storage: ")) for s, e in rows] == [("http:b", True)]


def test_retried_events_beside_new_ones_are_all_stored(database_url, clean_raw):
    now = dt.datetime.now(dt.UTC)
    old = _events(3)
    asyncio.run(_write(database_url, [Submission(old, [], "http:a", now)]))
    new = _events(4)
    mixed = [new[0], old[1], new[1], new[2], old[0], new[3]]
    # A retry of another request in the same flush, and the same event twice in one flush.
    subs = [Submission(mixed, [], "http:a", now), Submission([old[2], new[0]], [], "http:a", now)]
    assert asyncio.run(_write(database_url, subs)) == 4
    assert _stored(clean_raw, new) == 4 and _stored(clean_raw, old) == 3


def test_keys_are_per_scope(database_url, clean_raw):
    now = dt.datetime.now(dt.UTC)
    events = _events(2)
    asyncio.run(_write(database_url, [Submission(events, [], "http:web", now)]))
    asyncio.run(_write(database_url, [Submission(events, [], "ingest:a.jsonl", now)]))
    asyncio.run(_write(database_url, [Submission(events, [], "ingest:b.jsonl", now)]))
    assert _stored(clean_raw, events) == 4  # web's and the files' (once, whatever the file)


def test_a_retry_received_on_a_later_day_is_stored_once(database_url, clean_raw):
    now = dt.datetime.now(dt.UTC)
    sent = (now - dt.timedelta(days=1, hours=2)).isoformat()
    events = _events(3, timestamp=sent)
    first = Submission(events, [], "http:app", now - dt.timedelta(days=1))
    assert asyncio.run(_write(database_url, [first])) == 3
    new = _events(2, timestamp=sent)  # late too, but never stored: they must go in
    retry = Submission([*events, *new], [], "http:app", now)
    assert asyncio.run(_write(database_url, [retry])) == 2
    days = clean_raw.execute(
        "SELECT received_day, count(*) FROM raw.events GROUP BY 1 ORDER BY 1").fetchall()
    assert days == [(first.received_day, 3), (retry.received_day, 2)]
