"""Writes validated events to `raw.events` and refusals to `raw.rejected_events`.

One flush is one transaction. An event is stored once per (event_id, scope), where the scope
is the write key (or `ingest` for files): one source can never shadow another's event by
reusing its id. `raw.events` is partitioned by received day and keyed by
(event_id, scope, received_day), so a retry received on the same day hits the key: the fast
path is a plain COPY inside a savepoint, and only a flush that meets a stored event falls back
to COPY into a temporary table plus `INSERT ... ON CONFLICT DO NOTHING`. A retry received on
a later day can only be an event whose timestamp is older than the day; those few are looked
up in the previous `LOOKBACK_DAYS` partitions first.

A flush that PostgreSQL refuses because of its data (something validation let through) is
isolated: each request is written on its own, and within a request the failing events are
found by bisection and turned into rejections, so one request's content never costs another
request anything. Only a lost connection or an overloaded server fails the whole flush.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson
import psycopg
from psycopg import errors

from collector import metrics
from collector.validation import Event, Rejection

EVENT_COLUMNS = (
    "event_id, event_type, event_ts, received_at, client_id, user_id, device_type, "
    "push_token, email, phone, source, payload, received_day"
)
# Events go in binary COPY: timestamps, dates and ids are sent as numbers, not text that both
# sides format and parse (a fifth of the collector's CPU per event, and the server's too).
# The payload arrives as orjson's JSON text; jsonb's binary input is a version byte (1) and that
# text, so it is handed over as ready-made bytes (bytea's dumper passes bytes through as they
# are) and PostgreSQL parses it as jsonb exactly as from text COPY.
EVENT_TYPES = (
    "uuid", "text", "timestamptz", "timestamptz", "text", "text", "text", "text", "text",
    "text", "text", "bytea", "date",
)
JSONB_VERSION = b"\x01"
# The rows themselves are encoded here, not by psycopg's row formatter: each value's binary
# form is a few bytes and a length, and building them in one pass costs half of formatting a
# tuple through a dumper per value (measured per event, on the collector and on files).
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # the format's header: no flags, no extension
_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_ROW_HEAD = struct.pack(">hi", 13, 16)  # 13 fields, then the event id's 16 bytes
_INT32 = struct.Struct(">i").pack
_TIMESTAMP = struct.Struct(">iq").pack  # 8 bytes: microseconds since 2000-01-01 UTC
_DATE = struct.Struct(">ii").pack  # 4 bytes: days since 2000-01-01
_PAYLOAD_HEAD = struct.Struct(">ic").pack  # length, then jsonb's version byte
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_PG_DATE_EPOCH = _PG_EPOCH.date()
_MICROSECOND = dt.timedelta(microseconds=1)
REJECT_COLUMNS = "received_at, source, batch_index, errors, payload, raw_text"
# How far back a retry is recognised across days (a mobile app may queue events offline).
LOOKBACK_DAYS = 7
# An event stamped up to this long after midnight may still have been received the day
# before, by a device whose clock runs a little fast.
CLOCK_SKEW = dt.timedelta(minutes=5)
STORED_EARLIER_SQL = (
    "SELECT e.event_id, e.scope FROM raw.events e "
    "JOIN unnest(%b::uuid[], %b::text[]) AS k(event_id, scope) "
    "ON e.event_id = k.event_id AND e.scope = k.scope "
    "WHERE e.received_day >= %b AND e.received_day < %b"
)
# SQLSTATE classes that say the server, not the data, is the problem: connection exceptions,
# insufficient resources (memory, disk, lock table, connections), operator intervention.
SERVER_STATES = ("08", "53", "57")
# A transaction PostgreSQL rolled back to break a deadlock is written again, whole, not
# isolated as if its rows were at fault (they are not).
RETRIED = (errors.DeadlockDetected, errors.SerializationFailure)
DEADLOCK_RETRIES = 5


def scope_of(source: str) -> str:
    """The deduplication scope of a source (the same rule as raw.events.scope)."""
    return source if source.startswith("http:") else "ingest"


@dataclass(slots=True)
class Submission:
    """What one request (or one file chunk) hands to the writer."""

    events: list[Event]
    rejections: list[Rejection]
    source: str
    received_at: dt.datetime
    # Events PostgreSQL refused although they passed validation (filled in by the writer).
    refused: list[Rejection] = field(default_factory=list)

    @property
    def received_day(self) -> dt.date:
        return self.received_at.astimezone(dt.UTC).date()


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


def _event_row(e: Event, s: Submission, day: dt.date) -> tuple:
    return (
        e.event_id, e.event_type, e.event_ts, s.received_at, e.client_id, e.user_id,
        e.device_type, e.push_token, e.email, e.phone, s.source,
        JSONB_VERSION + e.payload_json.encode(), day,
    )


def _text(value: str | None) -> bytes:
    if value is None:
        return _NULL
    data = value.encode()
    return _INT32(len(data)) + data


def _timestamp(value: dt.datetime) -> bytes:
    return _TIMESTAMP(8, (value - _PG_EPOCH) // _MICROSECOND)


_TYPE_FIELDS: dict[str, bytes] = {}  # an event type's encoded field, per name


def _encoded_rows(s: Submission, day: dt.date) -> list[bytes]:
    """The binary COPY rows of `s`'s events, in EVENT_COLUMNS' order, one bytes per event."""
    received, source = _timestamp(s.received_at), _text(s.source)
    received_day = _DATE(4, (day - _PG_DATE_EPOCH).days)
    types, text, epoch, us = _TYPE_FIELDS, _text, _PG_EPOCH, _MICROSECOND
    rows = []
    try:
        for e in s.events:
            kind = types.get(e.event_type)
            if kind is None:
                kind = types.setdefault(e.event_type, text(e.event_type))
            payload = e.payload_json.encode()
            rows.append(b"".join((
                _ROW_HEAD, e.event_id.int.to_bytes(16), kind,
                _TIMESTAMP(8, (e.event_ts - epoch) // us), received,
                text(e.client_id), text(e.user_id), text(e.device_type), text(e.push_token),
                text(e.email), text(e.phone), source,
                _PAYLOAD_HEAD(len(payload) + 1, JSONB_VERSION), payload, received_day,
            )))
    except (UnicodeEncodeError, OverflowError) as exc:
        # What psycopg's dumpers would refuse: a data error, so the flush isolates the event.
        raise errors.DataError(f"{type(exc).__name__}: {exc}") from None
    return rows


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
    return {s.received_day for s in subs}


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
    """Per-connection set-up: the fallback table for flushes that contain retries."""
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS incoming_events ON COMMIT DELETE ROWS AS "
        f"SELECT {EVENT_COLUMNS} FROM raw.events WITH NO DATA"
    )
    await conn.commit()


async def write(conn: psycopg.AsyncConnection, subs: Sequence[Submission]) -> int:
    """Store one flush in one transaction, isolating rows PostgreSQL refuses (see module doc).
    Returns the number of new events stored. Raises only for server failures."""
    for _ in range(DEADLOCK_RETRIES - 1):
        try:
            return await _write(conn, subs)
        except RETRIED:
            # PostgreSQL undid the whole transaction to break a cycle of waits: nothing of it
            # is stored, and the same flush again is a new, ordinary attempt.
            continue
    return await _write(conn, subs)  # the last attempt's deadlock is raised


async def _write(conn: psycopg.AsyncConnection, subs: Sequence[Submission]) -> int:
    try:
        async with conn.transaction():
            stored = await _store_events(conn, subs)
            await _store_rejections(conn, subs)
        return stored
    except psycopg.Error as exc:
        if server_failure(exc, conn) or isinstance(exc, RETRIED):
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
        if server_failure(exc, conn) or isinstance(exc, RETRIED):
            raise
        if len(events) == 1:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return 0, [Rejection(events[0].index, [f"storage: {message}"], events[0].payload)]
    mid = len(events) // 2
    n1, r1 = await _bisect(conn, sub, events[:mid])
    n2, r2 = await _bisect(conn, sub, events[mid:])
    return n1 + n2, r1 + r2


async def _store_events(conn: psycopg.AsyncConnection, subs: Sequence[Submission]) -> int:
    rows: list[bytes] = []
    keys: list[tuple] = []
    late: list[Event] = []  # events that may be retries of an event received on an earlier day
    late_scopes: list[str] = []
    for s in _without_repeats(subs):
        scope, day = scope_of(s.source), s.received_day
        day_began = dt.datetime.combine(day, dt.time(), dt.UTC) + CLOCK_SKEW
        rows += _encoded_rows(s, day)
        keys += [(e.event_id.int, scope) for e in s.events]
        for e in s.events:
            if e.event_ts < day_began:
                late.append(e)
                late_scopes.append(scope)
    if late:
        stored = await _stored_earlier(conn, late, late_scopes, min(received_days(subs)))
        if stored:
            kept = [(row, key) for row, key in zip(rows, keys, strict=True) if key not in stored]
            rows, keys = [row for row, _ in kept], [key for _, key in kept]
    if not rows:
        return 0
    # In key order, so two writers that meet on the same new events (a file's pieces loaded
    # side by side, two collector lanes) wait on each other in one direction, never in a cycle.
    # By the id alone: the order of PostgreSQL's uuid (its 16 bytes, big-endian).
    ids = [key[0] for key in keys]
    data = b"".join([rows[i] for i in sorted(range(len(rows)), key=ids.__getitem__)])
    try:
        async with conn.transaction():  # a savepoint: a retry only undoes this COPY
            await _copy_events(conn, "raw.events", data)
        return len(rows)
    except errors.UniqueViolation:
        pass
    await _copy_events(conn, "incoming_events", data)
    cur = await conn.execute(
        f"INSERT INTO raw.events ({EVENT_COLUMNS}) "
        f"SELECT {EVENT_COLUMNS} FROM incoming_events ORDER BY event_id ON CONFLICT DO NOTHING"
    )
    await conn.execute("DELETE FROM incoming_events")
    return cur.rowcount


def _without_repeats(subs: Sequence[Submission]) -> Sequence[Submission]:
    """An event met twice in one flush (two requests, or one file chunk) is stored once.
    Checked in one set first: repeats are rare. Keys are the ids' integers: hashing a UUID
    is a Python call, hashing its int is not."""
    keys = [(e.event_id.int, scope_of(s.source)) for s in subs for e in s.events]
    if len(set(keys)) == len(keys):
        return subs
    seen: set[tuple] = set()
    out = []
    position = 0
    for s in subs:
        kept = []
        for e in s.events:
            key = keys[position]
            position += 1
            if key not in seen:
                seen.add(key)
                kept.append(e)
        out.append(dataclasses.replace(s, events=kept))
    return out


async def _stored_earlier(
    conn: psycopg.AsyncConnection, events: list[Event], scopes: list[str], day: dt.date
) -> set[tuple]:
    """Which of `events` (each in its scope) were received in the `LOOKBACK_DAYS` days before
    `day`, as keys (id as int, scope)."""
    cur = await conn.execute(
        STORED_EARLIER_SQL,
        ([e.event_id for e in events], scopes, day - dt.timedelta(days=LOOKBACK_DAYS), day),
    )
    return {(event_id.int, scope) for event_id, scope in await cur.fetchall()}


async def _store_rejections(conn: psycopg.AsyncConnection, subs: Sequence[Submission]) -> None:
    rows = [_rejection_row(r, s) for s in subs for r in (*s.rejections, *s.refused)]
    if rows:
        await _copy(conn, f"COPY raw.rejected_events ({REJECT_COLUMNS}) FROM STDIN", rows)


async def _copy_events(conn: psycopg.AsyncConnection, table: str, data: bytes) -> None:
    """COPY rows encoded by `_encoded_rows` (joined) into `table`."""
    statement = f"COPY {table} ({EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
    async with conn.cursor().copy(statement) as copy:
        # Written as whole blocks, the format's header and trailer are ours to send.
        await copy.write(_SIGNATURE)
        await copy.write(data)
        await copy.write(_TRAILER)


async def _copy(conn: psycopg.AsyncConnection, statement: str, rows: list[tuple]) -> None:
    async with conn.cursor().copy(statement) as copy:
        for row in rows:
            await copy.write_row(row)
