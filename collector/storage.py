"""Writes validated events to `raw.events` and refusals to `raw.rejected_events`.

One flush is one transaction. `raw.event_keys` holds one row per (scope, event_id) ever stored:
inserting a flush's keys with ON CONFLICT DO NOTHING returns the ones that are new, and only
those events are copied into `raw.events`, so a retry is stored once however late it comes.
The scope is the write key (or `ingest` for files): one source can never shadow another's
event by reusing its id.

A flush that PostgreSQL refuses because of its data (something validation let through) is
isolated: each request is written on its own, and within a request the failing events are
found by bisection and turned into rejections, so one request's content never costs another
request anything. Only a lost connection or an overloaded server fails the whole flush.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson
import psycopg

from collector import metrics
from collector.validation import Event, Rejection

EVENT_COLUMNS = (
    "event_id, event_type, event_ts, received_at, client_id, user_id, device_type, "
    "push_token, email, phone, source, payload"
)
REJECT_COLUMNS = "received_at, source, batch_index, errors, payload, raw_text"
KEYS_SQL = (
    "INSERT INTO raw.event_keys (scope, event_id) SELECT * FROM unnest(%b::text[], %b::uuid[]) "
    "ON CONFLICT DO NOTHING RETURNING scope, event_id"
)
# SQLSTATE classes that say the server, not the data, is the problem: connection exceptions,
# insufficient resources (memory, disk, lock table, connections), operator intervention.
SERVER_STATES = ("08", "53", "57")


@dataclass(slots=True)
class Submission:
    """What one request (or one file chunk) hands to the writer."""

    events: list[Event]
    rejections: list[Rejection]
    source: str
    received_at: dt.datetime
    scope: str = ""  # deduplication scope; the source when empty
    # Events PostgreSQL refused although they passed validation (filled in by the writer).
    refused: list[Rejection] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.scope = self.scope or self.source


def server_failure(exc: BaseException, conn: psycopg.AsyncConnection | None) -> bool:
    """True when `exc` means the database is unreachable or overloaded (answer 503), False
    when it was caused by the rows themselves."""
    if not isinstance(exc, psycopg.Error):
        return False
    if conn is None or conn.closed or conn.broken or isinstance(exc, psycopg.InterfaceError):
        return True
    state = exc.sqlstate
    if state is None:  # raised by the client library: a value it cannot send
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith(SERVER_STATES)


def _event_row(e: Event, s: Submission) -> tuple:
    return (
        e.event_id, e.event_type, e.event_ts, s.received_at, e.client_id, e.user_id,
        e.device_type, e.push_token, e.email, e.phone, s.source, e.payload_json,
    )


def _rejection_row(r: Rejection, s: Submission) -> tuple:
    payload = raw_text = None
    if isinstance(r.item, bytes):  # a JSONL line that was not JSON: kept verbatim
        raw_text = r.item.decode("utf-8", "replace").replace("\x00", "\\u0000")
    elif r.item is not None:
        try:
            text = orjson.dumps(r.item).decode()
        except TypeError:  # too deep, an inexact number, or a Python object
            try:
                raw_text = orjson.dumps(r.item, default=repr).decode()
            except TypeError:
                raw_text = "(not storable: nested too deeply)"
        else:
            if "\\u0000" in text:  # jsonb cannot hold U+0000; the escaped text can
                raw_text = text
            else:
                payload = text
    errors = [e.replace("\x00", "\\u0000") for e in r.errors]
    index = r.index if r.index >= 0 else None
    return (s.received_at, s.source, index, errors, payload, raw_text)


def received_days(subs: Iterable[Submission]) -> set[dt.date]:
    return {s.received_at.date() for s in subs}


class PartitionCache:
    """Remembers which daily partitions exist so a flush only does DDL for a new day."""

    def __init__(self) -> None:
        self.days: set[dt.date] = set()

    def missing(self, days: set[dt.date]) -> list[dt.date]:
        return sorted(days - self.days)


PARTITION_DAYS_SQL = """
SELECT to_date(substr(c.relname, 8), 'YYYYMMDD')
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'raw.events'::regclass AND c.relname ~ '^events_[0-9]{8}$'
"""


async def load_partitions(conn: psycopg.AsyncConnection, cache: PartitionCache) -> None:
    cur = await conn.execute(PARTITION_DAYS_SQL)
    cache.days.update(d for (d,) in await cur.fetchall())


async def ensure_partitions(
    conn: psycopg.AsyncConnection, cache: PartitionCache, days: set[dt.date]
) -> None:
    """Partitions are by the day the collector received an event, so a flush needs today's
    (and, around midnight, yesterday's): never one per day its timestamps mention."""
    missing = cache.missing(days)
    if not missing:
        return
    async with conn.transaction():
        await conn.execute("SELECT raw.ensure_event_partitions(%s, %s)", (missing[0], missing[-1]))
    cache.days.update(missing)


async def prepare(conn: psycopg.AsyncConnection) -> None:
    """Per-connection set-up (none needed today; kept as the place for it)."""


async def write(conn: psycopg.AsyncConnection, subs: Sequence[Submission]) -> int:
    """Store one flush in one transaction, isolating rows PostgreSQL refuses (see module doc).
    Returns the number of new events stored. Raises only for server failures."""
    try:
        async with conn.transaction():
            stored = await _store_events(conn, subs)
            await _store_rejections(conn, subs)
        return stored
    except psycopg.Error as exc:
        if server_failure(exc, conn):
            raise
    metrics.ISOLATED_FLUSHES.inc()
    if len(subs) > 1:  # find the request at fault: each on its own
        return sum([await write(conn, [s]) for s in subs])
    sub = subs[0]
    async with conn.transaction():
        stored, sub.refused = await _bisect(conn, sub, sub.events)
        await _store_rejections(conn, subs)
    return stored


async def _bisect(
    conn: psycopg.AsyncConnection, sub: Submission, events: list[Event]
) -> tuple[int, list[Rejection]]:
    """Store what PostgreSQL accepts of `events` (inside the caller's transaction); return the
    count stored and a rejection for each event it refuses, naming its error."""
    try:
        async with conn.transaction():  # a savepoint: a failure undoes only this part
            return await _store_events(conn, [dataclasses.replace(sub, events=events)]), []
    except psycopg.Error as exc:
        if server_failure(exc, conn):
            raise
        if len(events) == 1:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return 0, [Rejection(events[0].index, [f"storage: {message}"], events[0].payload)]
    mid = len(events) // 2
    n1, r1 = await _bisect(conn, sub, events[:mid])
    n2, r2 = await _bisect(conn, sub, events[mid:])
    return n1 + n2, r1 + r2


async def _store_events(conn: psycopg.AsyncConnection, subs: Sequence[Submission]) -> int:
    rows: list[tuple] = []
    scopes: list[str] = []
    ids: list = []
    seen: set[tuple[str, object]] = set()
    for s in subs:
        for e in s.events:
            key = (s.scope, e.event_id)
            if key in seen:  # two requests of one flush carrying the same event: one row
                continue
            seen.add(key)
            rows.append(_event_row(e, s))
            scopes.append(s.scope)
            ids.append(e.event_id)
    if not rows:
        return 0
    cur = await conn.execute(KEYS_SQL, (scopes, ids))
    new = await cur.fetchall()
    if len(new) < len(rows):  # some are retries of stored events: copy only the others
        fresh = set(new)
        rows = [row for row, key in zip(rows, zip(scopes, ids, strict=True), strict=True)
                if key in fresh]
    if rows:
        await _copy(conn, f"COPY raw.events ({EVENT_COLUMNS}) FROM STDIN", rows)
    return len(rows)


async def _store_rejections(conn: psycopg.AsyncConnection, subs: Sequence[Submission]) -> None:
    rows = [_rejection_row(r, s) for s in subs for r in (*s.rejections, *s.refused)]
    if rows:
        await _copy(conn, f"COPY raw.rejected_events ({REJECT_COLUMNS}) FROM STDIN", rows)


async def _copy(conn: psycopg.AsyncConnection, statement: str, rows: list[tuple]) -> None:
    async with conn.cursor().copy(statement) as copy:
        for row in rows:
            await copy.write_row(row)
