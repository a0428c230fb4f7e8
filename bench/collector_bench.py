"""Collector throughput, end to end into committed rows, on the embedded PostgreSQL.

(a) batches of 100 events over HTTP from concurrent clients
(b) single-event requests: the highest rate, and p99 latency at half that rate
(c) plain psycopg COPY of the same rows: the ceiling

    .venv/bin/python bench/collector_bench.py [--events 300000] [--clients 8]

Side by side with another version of the project (a git worktree of an older commit): whole
runs alternate between the two trees, each on a fresh database, and a table of every run
closes the output. The load generator and (c) are this file in both cases, so only the
collector (and its migrations) differ.

    git worktree add /tmp/old b23ee35
    .venv/bin/python bench/collector_bench.py --compare /tmp/old --runs 6

Single events right after a burst (`--burst-runs N`): each run starts a fresh embedded server
and database, loads `--burst-events` (a million) events through the collector's batch path
((a)'s 100-event requests), then at once sends single-event requests at 1,000/s for 10 s,
sampling what PostgreSQL does meanwhile (autovacuum and analyse progress, the checkpointer,
WAL written, what the collector's connections wait on) every 50 ms. Each run prints p50/p99,
the load average and a per-second timeline; the last line gives the worst p99 of all runs.
Runs alternate between trees with --compare (one run per subprocess: `--burst-runs 1`):

    .venv/bin/python bench/collector_bench.py --compare /tmp/old --runs 10 --burst-runs 1

The load generator is a small asyncio HTTP/1.1 client over keep-alive connections that fills
unique event ids into pre-built bodies with one bytes.replace, so it costs the machine little
next to the collector and the database (all three share the same 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
import psycopg

# The project tree whose collector and migrations run (another version under --compare).
ROOT = Path(os.environ.get("CRM_BENCH_ROOT") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))

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


async def open_loop(
    port, key, template, rate, seconds, clients, first,
    timed: list[tuple[float, float]] | None = None,
) -> list[float]:
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
            if timed is not None:
                timed.append((due, latencies[-1]))
            if status != 202:
                raise RuntimeError(f"status {status}")
        c.writer.close()

    await asyncio.gather(scheduler(), *(worker() for _ in range(clients)))
    return latencies


# What PostgreSQL is doing, sampled during the burst: the autovacuum and analyse progress
# views, the checkpointer (its wait event is CheckpointWriteDelay while a checkpoint spreads
# its writes), WAL written so far, and what the other client backends (the collector's lanes)
# wait on. One query, so a sample is one consistent moment.
SAMPLE_SQL = """
SELECT
  (SELECT string_agg(relid::regclass::text || ' ' || phase, ', ' ORDER BY pid)
     FROM pg_stat_progress_vacuum),
  (SELECT string_agg(relid::regclass::text, ', ' ORDER BY pid) FROM pg_stat_progress_analyze),
  (SELECT coalesce(wait_event, 'running') FROM pg_stat_activity
    WHERE backend_type = 'checkpointer'),
  (SELECT num_done FROM pg_stat_checkpointer),
  (SELECT wal_bytes::bigint FROM pg_stat_wal),
  (SELECT wal_fpi FROM pg_stat_wal),
  (SELECT string_agg(DISTINCT wait_event_type || ':' || wait_event, ' ')
     FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
      AND state = 'active' AND wait_event IS NOT NULL)
"""


class Sampler(threading.Thread):
    """Polls SAMPLE_SQL every `every` seconds until stopped; samples carry perf_counter()
    times, the clock the open loop's due times use."""

    def __init__(self, url: str, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.samples: list[tuple] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SET stats_fetch_consistency = none")  # fresh counters each time
            while not self.stop.is_set():
                t = time.perf_counter()
                row = conn.execute(SAMPLE_SQL).fetchone()
                self.samples.append((t, *row, kernel_dirty_mb()))
                self.stop.wait(self.every)


def kernel_dirty_mb() -> float:
    """Dirty plus under-writeback page cache of the whole machine (MB): a load's data files
    written but not yet on disk, which the kernel flushes in one go about 30 s later, in
    front of every commit's WAL fsync."""
    kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(("Dirty:", "Writeback:")):
                kb += int(line.split()[1])
    return kb / 1024


def timeline(lat: list[tuple[float, float]], samples: list[tuple], start: float) -> list[str]:
    """One line per second of the burst: p99 and max of the requests due in it, checkpoints
    completed, WAL written (MB, full-page images) and what ran in PostgreSQL meanwhile."""
    lines = []
    seconds = int(max(d for d, _ in lat) - start) + 1
    for sec in range(seconds):
        lo, hi = start + sec, start + sec + 1
        these = [x for d, x in lat if lo <= d < hi]
        inside = [s for s in samples if lo <= s[0] < hi]
        if not these or len(inside) < 2:
            continue
        seen: list[str] = []
        waits: dict[str, int] = {}
        for s in inside:
            for label, value in (("vacuum", s[1]), ("analyze", s[2])):
                if value and f"{label} {value}" not in seen:
                    seen.append(f"{label} {value}")
            if s[3] == "CheckpointWriteDelay" and "checkpoint writing" not in seen:
                seen.append("checkpoint writing")
            for w in (s[7] or "").split():
                waits[w] = waits.get(w, 0) + 1
        seen += [f"{w} x{c}" for w, c in sorted(waits.items(), key=lambda x: -x[1])]
        first, last = inside[0], inside[-1]
        lines.append(
            f"  {sec:>2}s p99 {percentile(these, 99) * 1000:6.1f} max {max(these) * 1000:6.1f} ms"
            f" | checkpoints {last[4] - first[4]} WAL {(last[5] - first[5]) / 1e6:5.1f} MB"
            f" ({last[6] - first[6]} FPI) | kernel dirty {max(x[8] for x in inside):5.0f} MB"
            f" | {'; '.join(seen) or '-'}"
        )
    return lines


def burst_run(args: argparse.Namespace, n: int) -> float:
    """One run: a fresh server, `args.burst_events` events in 100-event batches, then single
    events at 1,000/s for 10 s. Prints the run's figures; returns its p99 in ms."""
    state = Path(tempfile.mkdtemp(prefix="crm-bench-burst-"))
    pg = EmbeddedPostgres(state / "pgdata")
    url = pg.start()
    try:
        migrate(url)
        key = keys.create(url, "bench")
        with running_collector(url, args.port, *args.collector_args), \
                psycopg.connect(url, autocommit=True) as conn:
            now = dt.datetime.now(dt.UTC)
            load_before = os.getloadavg()
            secs, _ = asyncio.run(closed_loop(
                args.port, key, body_template(100, uuid.uuid4().hex, now),
                args.burst_events // 100, args.clients,
            ))
            sampler = Sampler(url)
            sampler.start()
            single = body_template(1, uuid.uuid4().hex, now)
            start = time.perf_counter() + 0.2  # open_loop's first due time
            timed: list[tuple[float, float]] = []
            lat = asyncio.run(open_loop(args.port, key, single, 1000, 10, args.single_clients,
                                        args.burst_events, timed))
            sampler.stop.set()
            sampler.join()
            load_after = os.getloadavg()
            stored = conn.execute("SELECT count(*) FROM raw.events").fetchone()[0]
            part = conn.execute(
                "SELECT c.oid::regclass, s.last_autovacuum IS NOT NULL, "
                "s.last_autoanalyze IS NOT NULL, s.autovacuum_count, s.autoanalyze_count "
                "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_stat_user_tables s ON s.relid = c.oid "
                "WHERE i.inhparent = 'raw.events'::regclass ORDER BY s.n_live_tup DESC LIMIT 1"
            ).fetchone()
        p50, p99 = statistics.median(lat) * 1000, percentile(lat, 99) * 1000
        slow = sum(x > 0.05 for x in lat)
        print(f"burst run {n}: loaded {args.burst_events:,} events in {secs:.1f} s "
              f"({args.burst_events / secs:,.0f}/s), load average {load_before[0]:.2f} before, "
              f"{load_after[0]:.2f} after; partition {part[0]}: autovacuums {part[3]}, "
              f"autoanalyzes {part[4]} by the end")
        for line in timeline(timed, sampler.samples, start):
            print(line)
        print(f"(burst) single events at 1,000 req/s for 10 s right after the load, run {n}: "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(lat) * 1000:.1f} ms, "
              f"{slow} of {len(lat)} over 50 ms; load average {load_before[0]:.2f}", flush=True)
        expected = args.burst_events + len(lat)
        if stored != expected:
            raise SystemExit(f"stored {stored:,} events, expected {expected:,}")
        return p99
    finally:
        pg.stop()
        shutil.rmtree(state, ignore_errors=True)


CEILING_COLUMNS = (
    "event_id, event_type, event_ts, received_at, client_id, user_id, device_type, "
    "push_token, email, phone, source, payload, received_day"
)
CEILING_TABLE = """
CREATE TABLE IF NOT EXISTS public.copy_ceiling (
    event_id uuid PRIMARY KEY, event_type text NOT NULL, event_ts timestamptz NOT NULL,
    received_at timestamptz NOT NULL, client_id text, user_id text, device_type text,
    push_token text, email text, phone text, source text NOT NULL, payload jsonb NOT NULL,
    received_day date NOT NULL
);
CREATE INDEX IF NOT EXISTS copy_ceiling_received_at ON public.copy_ceiling
    USING brin (received_at);
"""


def copy_ceiling(url: str, run: str, events: int, chunk: int) -> float:
    """Plain COPY of the rows the collector writes for these events, in chunks of `chunk`,
    into an unpartitioned table of the raw-event shape with a uuid primary key (the unique
    check any deduplicating store pays). The rows are built here, not by the collector's
    code, so the ceiling is the same whichever version of the collector is measured."""
    when = dt.datetime.now(dt.UTC)
    received = dt.datetime.now(dt.UTC)
    rows = []
    for i in range(events):
        item = event_template(i % 4096, run, when)
        item["event_id"] = str(uuid.uuid4())
        ts = dt.datetime.fromisoformat(item["timestamp"])
        rows.append((
            uuid.UUID(item["event_id"]), item["event"], ts, received, item["client_id"],
            item["user_id"], item["device_type"], None, None, None,
            "bench:copy", orjson.dumps(item).decode(), received.date(),
        ))
    with psycopg.connect(url) as conn:
        conn.execute(CEILING_TABLE)
        conn.commit()
        start = time.perf_counter()
        for i in range(0, len(rows), chunk):
            with conn.transaction(), conn.cursor().copy(
                f"COPY public.copy_ceiling ({CEILING_COLUMNS}) FROM STDIN"
            ) as copy:
                for row in rows[i : i + chunk]:
                    copy.write_row(row)
        return len(rows) / (time.perf_counter() - start)


def collector_cpu_seconds() -> float:
    """CPU time used so far by the collector processes this benchmark started (user + system,
    workers included): per event, it does not depend on how busy the machine is."""
    import psutil

    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            if "collector" in " ".join(proc.cmdline()):
                t = proc.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def percentile(values: list[float], p: float) -> float:
    if len(values) < 10:
        return max(values)
    return statistics.quantiles(values, n=1000)[int(p * 10) - 1]


FIGURES = {
    "copy": re.compile(r"\(c\) plain COPY.*median:\s+([\d,]+)"),
    "http": re.compile(r"\(a\) \d+-event batches.*median:\s+([\d,]+)"),
    "single": re.compile(r"\(b\) single-event requests, \d+ clients, max:\s+([\d,]+)"),
    "p99": re.compile(r"\(b\) single-event requests at 1,000 req/s.*p99 ([\d.]+) ms"),
    "cpu": re.compile(r"\(a\) collector CPU per event, median: ([\d.]+) us"),
    "burst": re.compile(r"\(burst\) single events .*p99 ([\d.]+) ms"),
    "burst_p50": re.compile(r"\(burst\) single events .*p50 ([\d.]+) ms"),
    "burst_max": re.compile(r"\(burst\) single events .*max ([\d.]+) ms"),
    "burst_load": re.compile(r"\(burst\) single events .*load average ([\d.]+)"),
    "stored": re.compile(r"rows committed by the collector: ([\d,]+) \(expected ([\d,]+)\)"),
}


def compare(other: Path, runs: int, passed: list[str]) -> None:
    """Whole runs of this benchmark, alternating between `other` and this tree; every run's
    figures, then the median and the worst (a) / (c) ratio of each version."""
    this = Path(__file__).resolve().parents[1]
    trees = [("before", other), ("after", this)]
    table = []
    for n in range(runs):
        label, tree = trees[n % 2]
        print(f"--- run {n + 1}: {label} ({tree})", flush=True)
        out = subprocess.run(
            [sys.executable, __file__, *passed], env={**os.environ, "CRM_BENCH_ROOT": str(tree)},
            capture_output=True, text=True, check=False,
        )
        print(out.stdout, end="", flush=True)
        if out.returncode:
            print(out.stderr[-3000:])
            raise SystemExit(f"run {n + 1} failed")
        found = {k: rx.search(out.stdout) for k, rx in FIGURES.items()}
        num = {k: float(m.group(1).replace(",", "")) if m else float("nan")
               for k, m in found.items()}
        table.append((n + 1, label, num))
    if "--burst-runs" in " ".join(passed):
        burst_table(table, trees)
        return
    print("| run | version | (c) COPY rows/s | (a) HTTP events/s | (a)/(c) | collector CPU "
          "us/event | (b) max req/s | (b) p99 at 1,000/s |")
    print("|---|---|---|---|---|---|---|---|")
    for n, label, v in table:
        print(f"| {n} | {label} | {v['copy']:,.0f} | {v['http']:,.0f} | "
              f"{v['http'] / v['copy']:.1%} | {v['cpu']:.1f} | {v['single']:,.0f} | "
              f"{v['p99']:.1f} ms |")
    for label, _ in trees:
        ratios = [v["http"] / v["copy"] for _, lab, v in table if lab == label]
        if ratios:
            cpus = [v["cpu"] for _, lab, v in table if lab == label]
            print(f"{label}: (a)/(c) median {statistics.median(ratios):.1%}, "
                  f"worst {min(ratios):.1%} over {len(ratios)} runs; collector CPU per event "
                  f"median {statistics.median(cpus):.1f} us, worst {max(cpus):.1f} us")


def burst_table(table: list, trees: list) -> None:
    print("| run | version | load average | p50 | p99 | max |")
    print("|---|---|---|---|---|---|")
    for n, label, v in table:
        print(f"| {n} | {label} | {v['burst_load']:.2f} | {v['burst_p50']:.1f} ms | "
              f"{v['burst']:.1f} ms | {v['burst_max']:.1f} ms |")
    for label, _ in trees:
        p99s = [v["burst"] for _, lab, v in table if lab == label]
        if p99s:
            print(f"{label}: burst p99 median {statistics.median(p99s):.1f} ms, worst "
                  f"{max(p99s):.1f} ms over {len(p99s)} runs "
                  f"({sum(p < 50 for p in p99s)} of them under 50 ms)")


def without_compare_options(argv: list[str]) -> list[str]:
    """`argv` minus --compare/--runs and their values (the rest is passed to every run)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--compare", "--runs"):
            skip = True
        elif not a.startswith(("--compare=", "--runs=")):
            out.append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000, help="events for (a) and (c)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients for (a)")
    ap.add_argument("--rounds", type=int, default=3, help="(c)/(a) rounds; 0: only (b)")
    ap.add_argument("--single-requests", type=int, default=20_000)
    ap.add_argument("--single-clients", type=int, default=32, help="concurrent clients for (b)")
    ap.add_argument("--collector-args", nargs="*", default=[], help="extra `crm collector` options")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--compare", type=Path, metavar="TREE",
                    help="alternate whole runs with the project tree TREE (an older worktree)")
    ap.add_argument("--runs", type=int, default=6, help="runs under --compare (both trees)")
    ap.add_argument("--burst-runs", type=int, default=0,
                    help="instead of the rounds: runs of a load then single events at 1,000/s")
    ap.add_argument("--burst-events", type=int, default=1_000_000,
                    help="events loaded before each burst run's single events")
    args, passed = ap.parse_known_args()
    if args.compare:
        compare(args.compare.resolve(), args.runs, without_compare_options(sys.argv[1:]))
        return
    if passed:
        ap.error(f"unrecognised arguments: {' '.join(passed)}")
    if args.burst_runs:
        p99s = [burst_run(args, n + 1) for n in range(args.burst_runs)]
        print(f"(burst) worst p99 {max(p99s):.1f} ms over {len(p99s)} runs (target: under 50 ms"
              f" in every run), median {statistics.median(p99s):.1f} ms; each run on a fresh "
              f"database")
        return

    state = Path(tempfile.mkdtemp(prefix="crm-bench-"))
    pg = EmbeddedPostgres(state / "pgdata")
    url = pg.start()
    migrate(url)
    key = keys.create(url, "bench")
    port = args.port
    with running_collector(url, port, *args.collector_args):
        now = dt.datetime.now(dt.UTC)
        print(f"machine: {os.cpu_count()} cores (collector, PostgreSQL and load share them)")
        print(f"collector: crm collector {' '.join(args.collector_args)}".rstrip())
        # (c) and (a) alternate, so a busy moment on the machine hits both alike.
        ceilings, rates, cpus = [], [], []
        for r in range(args.rounds):
            ceiling = copy_ceiling(url, uuid.uuid4().hex, args.events, 1000)
            template = body_template(100, uuid.uuid4().hex, now)
            cpu_before = collector_cpu_seconds()
            secs, lat = asyncio.run(
                closed_loop(port, key, template, args.events // 100, args.clients)
            )
            cpu = (collector_cpu_seconds() - cpu_before) / args.events * 1e6
            rate_a = args.events / secs
            ceilings.append(ceiling)
            rates.append(rate_a)
            cpus.append(cpu)
            print(
                f"round {r + 1}: (c) COPY {ceiling:>9,.0f} rows/s | (a) HTTP {rate_a:>9,.0f} "
                f"events/s = {rate_a / ceiling:.0%} of (c); request p50 "
                f"{statistics.median(lat) * 1000:.1f} ms, p99 {percentile(lat, 99) * 1000:.1f} ms;"
                f" collector CPU {cpu:.1f} us/event"
            )
        if args.rounds:
            c_med, a_med = statistics.median(ceilings), statistics.median(rates)
            print(f"(c) plain COPY, 1000-row transactions, median: {c_med:>10,.0f} rows/s")
            print(
                f"(a) 100-event batches, {args.clients} clients, median: {a_med:>10,.0f} "
                f"events/s ({a_med / c_med:.0%} of (c))"
            )
            print(f"(a) collector CPU per event, median: {statistics.median(cpus):.1f} us")

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
