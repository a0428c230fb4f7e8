"""Collector throughput, end to end into committed rows, on the embedded PostgreSQL.

(a) batches of 100 events over HTTP from concurrent clients
(b) single-event requests: the highest rate, and p99 latency at half that rate
(c) plain psycopg COPY of the same rows: the ceiling

    .venv/bin/python bench/collector_bench.py [--events 300000] [--clients 8]

The load generator is a small asyncio HTTP/1.1 client over keep-alive connections that fills
unique event ids into pre-built bodies with one bytes.replace, so it costs the machine little
next to the collector and the database (all three share the same 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collector.storage import EVENT_COLUMNS, Submission, _event_row  # noqa: E402
from collector.validation import validate_events  # noqa: E402
from crm import keys  # noqa: E402
from crm.db.embedded import EmbeddedPostgres  # noqa: E402
from crm.db.migrate import migrate  # noqa: E402
from crm.demo import running_collector  # noqa: E402

MARK = b"RRRRRRRR"


def event_template(i: int, run: str, when: dt.datetime) -> dict:
    """A realistic product_view; its id carries MARK, replaced by a request number."""
    return {
        "event": "product_view",
        "event_id": f"{MARK.decode()}-{run[:4]}-4{run[4:7]}-8{i:03x}-{run[7:19]}",
        "timestamp": (when - dt.timedelta(seconds=i)).isoformat(),
        "client_id": f"c1d-{run[:8]}-{i:04d}",
        "user_id": f"acct-{i * 7919 % 10000}" if i % 3 == 0 else None,
        "device_type": ("web", "ios", "android")[i % 3],
        "product_id": f"SKU-{i * 31 % 5000:05d}",
        "product_name": "Enamel bread bin, cream",
        "category": "kitchen",
        "price": 12.75,
        "page_url": f"https://shop.example/p/SKU-{i:05d}?utm_source=newsletter",
    }


def body_template(n: int, run: str, when: dt.datetime) -> bytes:
    events = [event_template(i, run, when) for i in range(n)]
    return orjson.dumps(events[0] if n == 1 else events)


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, body: bytes) -> int:
        head = (
            f"POST /v1/events HTTP/1.1\r\nHost: bench\r\nX-Write-Key: {self.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await self.reader.readexactly(length)
        return int(status_line.split()[1])


async def closed_loop(port, key, template, requests, clients) -> tuple[float, list[float]]:
    """`clients` connections each send back-to-back; returns (seconds, latencies)."""
    counter = iter(range(requests))
    latencies: list[float] = []

    async def worker() -> None:
        c = Client(port, key)
        await c.connect()
        for n in counter:
            body = template.replace(MARK, b"%08x" % n)
            t = time.perf_counter()
            status = await c.post(body)
            latencies.append(time.perf_counter() - t)
            if status != 202:
                raise RuntimeError(f"status {status}")
        c.writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - start, latencies


async def open_loop(port, key, template, rate, seconds, clients, first) -> list[float]:
    """Requests scheduled at a fixed rate; latency counts from the scheduled time, so a
    stall is not hidden by the generator waiting for it (no coordinated omission)."""
    total = int(rate * seconds)
    queue: asyncio.Queue = asyncio.Queue()
    latencies: list[float] = []
    start = time.perf_counter() + 0.2

    async def scheduler() -> None:
        for n in range(total):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((first + n, due))
        for _ in range(clients):
            queue.put_nowait(None)

    async def worker() -> None:
        c = Client(port, key)
        await c.connect()
        while (item := await queue.get()) is not None:
            n, due = item
            status = await c.post(template.replace(MARK, b"%08x" % n))
            latencies.append(time.perf_counter() - due)
            if status != 202:
                raise RuntimeError(f"status {status}")
        c.writer.close()

    await asyncio.gather(scheduler(), *(worker() for _ in range(clients)))
    return latencies


CEILING_TABLE = f"""
CREATE TABLE IF NOT EXISTS public.copy_ceiling AS
    SELECT {EVENT_COLUMNS} FROM raw.events WITH NO DATA;
ALTER TABLE public.copy_ceiling DROP CONSTRAINT IF EXISTS copy_ceiling_pkey;
ALTER TABLE public.copy_ceiling ADD PRIMARY KEY (event_id);
CREATE INDEX IF NOT EXISTS copy_ceiling_received_at ON public.copy_ceiling
    USING brin (received_at);
"""


def copy_ceiling(url: str, run: str, events: int, chunk: int) -> float:
    """Plain COPY of exactly the rows the collector would write, in chunks of `chunk`, into a
    table of the raw-event shape with a uuid primary key (the unique check any deduplicating
    store pays), unpartitioned: the ceiling measured before events were partitioned by
    received day, so the ratio stays comparable across versions."""
    when = dt.datetime.now(dt.UTC)
    items = [event_template(i % 4096, run, when) for i in range(events)]
    for _n, item in enumerate(items):
        item["event_id"] = str(uuid.uuid4())
    received = dt.datetime.now(dt.UTC)
    valid, _ = validate_events(items, received)
    sub = Submission(valid, [], "bench:copy", received)
    rows = [_event_row(e, sub, sub.received_day) for e in valid]
    with psycopg.connect(url) as conn:
        conn.execute(CEILING_TABLE)
        conn.commit()
        start = time.perf_counter()
        for i in range(0, len(rows), chunk):
            with conn.transaction(), conn.cursor().copy(
                f"COPY public.copy_ceiling ({EVENT_COLUMNS}) FROM STDIN"
            ) as copy:
                for row in rows[i : i + chunk]:
                    copy.write_row(row)
        return len(rows) / (time.perf_counter() - start)


def percentile(values: list[float], p: float) -> float:
    if len(values) < 10:
        return max(values)
    return statistics.quantiles(values, n=1000)[int(p * 10) - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000, help="events for (a) and (c)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients for (a)")
    ap.add_argument("--rounds", type=int, default=3, help="(c)/(a) rounds; 0: only (b)")
    ap.add_argument("--single-requests", type=int, default=20_000)
    ap.add_argument("--single-clients", type=int, default=32, help="concurrent clients for (b)")
    ap.add_argument("--collector-args", nargs="*", default=[], help="extra `crm collector` options")
    args = ap.parse_args()

    state = Path(tempfile.mkdtemp(prefix="crm-bench-"))
    pg = EmbeddedPostgres(state / "pgdata")
    url = pg.start()
    migrate(url)
    key = keys.create(url, "bench")
    port = 18080
    with running_collector(url, port, *args.collector_args):
        now = dt.datetime.now(dt.UTC)
        print(f"machine: {os.cpu_count()} cores (collector, PostgreSQL and load share them)")
        print(f"collector: crm collector {' '.join(args.collector_args)}".rstrip())
        # (c) and (a) alternate, so a busy moment on the machine hits both alike.
        ceilings, rates = [], []
        for r in range(args.rounds):
            ceiling = copy_ceiling(url, uuid.uuid4().hex, args.events, 1000)
            template = body_template(100, uuid.uuid4().hex, now)
            secs, lat = asyncio.run(
                closed_loop(port, key, template, args.events // 100, args.clients)
            )
            rate_a = args.events / secs
            ceilings.append(ceiling)
            rates.append(rate_a)
            print(
                f"round {r + 1}: (c) COPY {ceiling:>9,.0f} rows/s | (a) HTTP {rate_a:>9,.0f} "
                f"events/s = {rate_a / ceiling:.0%} of (c); request p50 "
                f"{statistics.median(lat) * 1000:.1f} ms, p99 {percentile(lat, 99) * 1000:.1f} ms"
            )
        if args.rounds:
            c_med, a_med = statistics.median(ceilings), statistics.median(rates)
            print(f"(c) plain COPY, 1000-row transactions, median: {c_med:>10,.0f} rows/s")
            print(
                f"(a) 100-event batches, {args.clients} clients, median: {a_med:>10,.0f} "
                f"events/s ({a_med / c_med:.0%} of (c))"
            )

        single = body_template(1, uuid.uuid4().hex, now)
        secs, lat = asyncio.run(
            closed_loop(port, key, single, args.single_requests, args.single_clients)
        )
        rate_b = args.single_requests / secs
        print(
            f"(b) single-event requests, {args.single_clients} clients, max: {rate_b:>8,.0f} req/s"
            f" (p99 {percentile(lat, 99) * 1000:.1f} ms at saturation)"
        )
        first = args.single_requests
        for rate in (1000, rate_b / 2):
            lat = asyncio.run(
                open_loop(port, key, single, rate, 10, args.single_clients, first)
            )
            first += int(rate * 10)
            print(
                f"(b) single-event requests at {rate:,.0f} req/s for 10 s: p50"
                f" {statistics.median(lat) * 1000:.1f} ms, p99 {percentile(lat, 99) * 1000:.1f} ms"
            )
        with psycopg.connect(url) as conn:
            stored = conn.execute(
                "SELECT count(*) FROM raw.events WHERE source = 'http:bench'"
            ).fetchone()[0]
        expected = args.events * args.rounds + first
        print(f"rows committed by the collector: {stored:,} (expected {expected:,})")
    pg.stop()
    shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
