"""Writes validated events to `raw.events` and refusals to `raw.rejected_events`.

One flush is one transaction. The fast path is a plain COPY inside a savepoint; only when it
hits an event that is already stored (a client retry) does the flush fall back to COPY into a
temporary table plus `INSERT ... ON CONFLICT DO NOTHING`, which costs about 40% more. Retries
are rare, so the common case runs at COPY speed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
import psycopg
from psycopg import errors

from collector.validation import Event, Rejection

EVENT_COLUMNS = (
    "event_id, event_type, event_ts, received_at, client_id, user_id, device_type, "
    "push_token, email, phone, source, payload"
)
REJECT_COLUMNS = "received_at, source, batch_index, errors, payload, raw_text"


@dataclass(slots=True)
class Submission:
    """What one request (or one file chunk) hands to the writer."""

    events: list[Event]
    rejections: list[Rejection]
    source: str
    received_at: dt.datetime


def _event_row(e: Event, s: Submission) -> tuple:
    return (
        e.event_id, e.event_type, e.event_ts, s.received_at, e.client_id, e.user_id,
        e.device_type, e.push_token, e.email, e.phone, s.source,
        orjson.dumps(e.payload).decode(),
    )


def _rejection_row(r: Rejection, s: Submission) -> tuple:
    if isinstance(r.item, bytes):  # a JSONL line that was not JSON: kept verbatim
        payload, raw_text = None, r.item.decode("utf-8", "replace")
    else:
        try:
            payload, raw_text = orjson.dumps(r.item).decode(), None
        except TypeError:  # a Python caller's object JSON cannot carry
            payload, raw_text = None, repr(r.item)
    return (s.received_at, s.source, r.index, r.errors, payload, raw_text)


def event_days(subs: Iterable[Submission]) -> set[dt.date]:
    return {e.event_ts.date() for s in subs for e in s.events}


class PartitionCache:
    """Remembers which daily partitions exist so a flush only does DDL for a new day."""

    def __init__(self) -> None:
        self.days: set[dt.date] = set()

    def missing(self, days: set[dt.date]) -> list[dt.date]:
        return sorted(days - self.days)


PARTITION_DAYS_SQL = """
SELECT to_date(substr(c.relname, 8), 'YYYYMMDD')
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'raw.events'::regclass
"""


async def load_partitions(conn: psycopg.AsyncConnection, cache: PartitionCache) -> None:
    cur = await conn.execute(PARTITION_DAYS_SQL)
    cache.days.update(d for (d,) in await cur.fetchall())


async def ensure_partitions(
    conn: psycopg.AsyncConnection, cache: PartitionCache, days: set[dt.date]
) -> None:
    missing = cache.missing(days)
    if not missing:
        return
    # Contiguous runs keep this to one call for the usual "tomorrow" or "a late day" case.
    for first, last in _runs(missing):
        async with conn.transaction():
            await conn.execute("SELECT raw.ensure_event_partitions(%s, %s)", (first, last))
    cache.days.update(missing)


def _runs(days: Sequence[dt.date]) -> list[tuple[dt.date, dt.date]]:
    runs: list[tuple[dt.date, dt.date]] = []
    for d in days:
        if runs and (d - runs[-1][1]).days == 1:
            runs[-1] = (runs[-1][0], d)
        else:
            runs.append((d, d))
    return runs


async def prepare(conn: psycopg.AsyncConnection) -> None:
    """Per-connection set-up: the fallback table for flushes that contain retries."""
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS incoming_events (LIKE raw.events) ON COMMIT DELETE ROWS"
    )
    await conn.commit()


async def write(conn: psycopg.AsyncConnection, subs: Sequence[Submission]) -> int:
    """Store one flush in one transaction; returns the number of event rows handed to COPY.

    The caller owns the connection and commits nothing itself: this function commits.
    """
    # Duplicates inside one flush need no special care: the COPY fails on them and the
    # fallback's ON CONFLICT DO NOTHING keeps the first.
    rows = [_event_row(e, s) for s in subs for e in s.events]
    rejects = [_rejection_row(r, s) for s in subs for r in s.rejections]
    async with conn.transaction():
        if rows:
            try:
                async with conn.transaction():  # savepoint: a duplicate only undoes the COPY
                    await _copy(conn, f"COPY raw.events ({EVENT_COLUMNS}) FROM STDIN", rows)
            except errors.UniqueViolation:
                await _copy(conn, f"COPY incoming_events ({EVENT_COLUMNS}) FROM STDIN", rows)
                await conn.execute(
                    f"INSERT INTO raw.events ({EVENT_COLUMNS}) "
                    f"SELECT {EVENT_COLUMNS} FROM incoming_events ON CONFLICT DO NOTHING"
                )
                await conn.execute("DELETE FROM incoming_events")
        if rejects:
            await _copy(
                conn, f"COPY raw.rejected_events ({REJECT_COLUMNS}) FROM STDIN", rejects
            )
    return len(rows)


async def _copy(conn: psycopg.AsyncConnection, statement: str, rows: list[tuple]) -> None:
    async with conn.cursor().copy(statement) as copy:
        for row in rows:
            await copy.write_row(row)
