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


class EventWriter:
    def __init__(
        self,
        database_url: str,
        *,
        max_wait: float = 0.002,
        max_events: int = 20_000,
        retry_after: float = 1.0,
    ) -> None:
        self.database_url = database_url
        self.max_wait = max_wait
        self.max_events = max_events
        self.retry_after = retry_after
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._conn: psycopg.AsyncConnection | None = None
        self._partitions = storage.PartitionCache()
        self._down_until = 0.0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-writer")

    async def close(self) -> None:
        """Flush what is queued, then stop."""
        if self._task is not None:
            while self._queue:
                self._wake.set()
                await asyncio.sleep(0.005)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()

    async def submit(self, sub: Submission) -> None:
        """Return once `sub` is committed; raise DatabaseUnavailable if it could not be."""
        if time.monotonic() < self._down_until:
            raise DatabaseUnavailable("database unreachable")
        pending = _Pending(sub)
        self._queue.append(pending)
        self._wake.set()
        await pending.done

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(
                self.database_url, connect_timeout=3
            )
            await storage.prepare(self._conn)
            await storage.load_partitions(self._conn, self._partitions)
            await self._conn.commit()
            # Keep a week of partitions ahead of a long-running collector.
            today = dt.datetime.now(dt.UTC).date()
            ahead = {today + dt.timedelta(days=d) for d in range(-1, 8)}
            await storage.ensure_partitions(self._conn, self._partitions, ahead)
        return self._conn

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
                await self._flush(self._take())

    async def _flush(self, batch: list[_Pending]) -> None:
        subs = [p.sub for p in batch]
        started = time.perf_counter()
        try:
            conn = await self._connection()
            await storage.ensure_partitions(conn, self._partitions, storage.event_days(subs))
            await storage.write(conn, subs)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # Connection lost or refused: whether the commit happened is unknown, so the
            # clients retry and the primary key makes the retry harmless.
            await self._drop_connection()
            self._down_until = time.monotonic() + self.retry_after
            metrics.FLUSH_FAILURES.inc()
            metrics.DATABASE_UP.set(0)
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(DatabaseUnavailable(str(exc).strip() or "unreachable"))
            return
        except Exception as exc:  # a bug or a constraint we did not expect: fail these requests
            await self._drop_connection()
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

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
