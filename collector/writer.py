"""Group commit: concurrent requests share one COPY and one commit.

Each request hands its events to the writer and waits; the writer takes everything queued,
writes it in one transaction and then releases all waiters together. A request is answered
202 only after its events are committed, so an acknowledged event survives a crash.
Under load the batches grow by themselves (requests queue up while a commit is in flight);
`max_wait` adds a short, bounded linger so that small concurrent requests meet even when the
database is fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import deque
from dataclasses import dataclass, field

import psycopg

from collector import metrics, storage
from collector.storage import Submission


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached; the client should retry (HTTP 503)."""


@dataclass(slots=True)
class _Pending:
    sub: Submission
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class _Lane:
    """One database connection and the flush running on it."""

    def __init__(self, database_url: str, partitions: storage.PartitionCache) -> None:
        self.database_url = database_url
        self.partitions = partitions
        self.conn: psycopg.AsyncConnection | None = None

    async def connection(self) -> psycopg.AsyncConnection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = await psycopg.AsyncConnection.connect(self.database_url, connect_timeout=3)
            await storage.prepare(self.conn)
            await storage.load_partitions(self.conn, self.partitions)
            await self.conn.commit()
            # Keep a week of partitions ahead of a long-running collector.
            today = dt.datetime.now(dt.UTC).date()
            ahead = {today + dt.timedelta(days=d) for d in range(-1, 8)}
            await storage.ensure_partitions(self.conn, self.partitions, ahead)
        return self.conn

    async def drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
            self.conn = None


class EventWriter:
    """Group commit over `lanes` connections: while one flush waits on PostgreSQL, the next
    is already being formatted and sent on another, so neither the collector nor the
    database sits idle waiting for the other."""

    def __init__(
        self,
        database_url: str,
        *,
        max_wait: float = 0.002,
        max_events: int = 20_000,
        retry_after: float = 1.0,
        lanes: int = 2,
    ) -> None:
        self.max_wait = max_wait
        self.max_events = max_events
        self.retry_after = retry_after
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        partitions = storage.PartitionCache()
        self._lanes = [_Lane(database_url, partitions) for _ in range(lanes)]
        self._free: asyncio.Queue[_Lane] = asyncio.Queue()
        for lane in self._lanes:
            self._free.put_nowait(lane)
        self._flushes: set[asyncio.Task] = set()
        self._down_until = 0.0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-writer")

    async def close(self) -> None:
        """Flush what is queued, then stop."""
        if self._task is not None:
            while self._queue or self._flushes:
                self._wake.set()
                await asyncio.sleep(0.005)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for lane in self._lanes:
            await lane.drop()

    async def submit(self, sub: Submission) -> None:
        """Return once `sub` is committed; raise DatabaseUnavailable if it could not be."""
        if time.monotonic() < self._down_until:
            raise DatabaseUnavailable("database unreachable")
        pending = _Pending(sub)
        self._queue.append(pending)
        self._wake.set()
        await pending.done

    def _take(self) -> list[_Pending]:
        taken, n = [], 0
        while self._queue and (not taken or n + len(self._queue[0].sub.events) <= self.max_events):
            p = self._queue.popleft()
            taken.append(p)
            n += len(p.sub.events)
        return taken

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self.max_wait:
                await asyncio.sleep(self.max_wait)
            self._wake.clear()
            while self._queue:
                # Waiting for a free lane lets more requests join the next flush.
                lane = await self._free.get()
                batch = self._take()
                if not batch:
                    self._free.put_nowait(lane)
                    break
                task = asyncio.create_task(self._flush(lane, batch))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)

    async def _flush(self, lane: _Lane, batch: list[_Pending]) -> None:
        try:
            await self._write(lane, batch)
        finally:
            self._free.put_nowait(lane)

    async def _write(self, lane: _Lane, batch: list[_Pending]) -> None:
        subs = [p.sub for p in batch]
        started = time.perf_counter()
        try:
            conn = await lane.connection()
            await storage.ensure_partitions(conn, lane.partitions, storage.received_days(subs))
            await storage.write(conn, subs)
        except Exception as exc:
            down = storage.server_failure(exc, lane.conn) or isinstance(exc, OSError)
            await lane.drop()
            if down:
                # Connection lost, refused or the server overloaded: whether the commit
                # happened is unknown, so the clients retry and the event keys make the
                # retry harmless.
                self._down_until = time.monotonic() + self.retry_after
                metrics.FLUSH_FAILURES.inc()
                metrics.DATABASE_UP.set(0)
                exc = DatabaseUnavailable(str(exc).strip() or "unreachable")
            # Anything else is a bug, not data: storage.write isolates rows it refuses.
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(exc)
            return
        metrics.DATABASE_UP.set(1)
        metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
        metrics.FLUSH_EVENTS.observe(sum(len(s.events) for s in subs))
        metrics.FLUSH_REQUESTS.observe(len(batch))
        for p in batch:
            if not p.done.done():
                p.done.set_result(None)
