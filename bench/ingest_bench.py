"""`crm ingest` of a simulated JSONL file against plain COPY of the same rows, alternately in
one run, so a busy machine weighs on both sides alike; prints the ratio of every round.

    .venv/bin/python bench/ingest_bench.py                      # 10,500 visitors x 30 days
    .venv/bin/python bench/ingest_bench.py --visitors 2000 --rounds 2 --workers 2

(c) plain COPY: the rows `crm ingest` stores for the file (built beforehand, untimed, by the
    collector's own validation) in binary COPY, one transaction per 10,000 rows, into an
    unpartitioned table of raw.events' shape with its unique key and BRIN index.
(i) `crm ingest FILE -q`: the whole process (start-up, reading, parsing, validation,
    deduplication, rejected lines, commits) into an empty raw.events.
(r) the same file once more: every event is already stored, nothing new may be.
Each round empties both tables first. Without --database-url a throw-away embedded
PostgreSQL is used. Besides the rates, each side's CPU time per row is printed: the client's
(this process for (c), `crm ingest` and its workers for (i)) and, when the server runs on this
machine with its data folder as socket folder (the embedded one), PostgreSQL's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_database  # noqa: E402
from collector import storage  # noqa: E402
from collector.storage import Submission  # noqa: E402
from collector.validation import validate_events  # noqa: E402

CEILING_TABLE = """
DROP TABLE IF EXISTS public.copy_ceiling;
CREATE TABLE public.copy_ceiling (LIKE raw.events INCLUDING DEFAULTS INCLUDING GENERATED);
CREATE UNIQUE INDEX ON public.copy_ceiling (event_id, scope, received_day);
CREATE INDEX ON public.copy_ceiling USING brin (received_at);
"""
COPY_ROWS = 10_000


def ceiling_rows(path: Path) -> list[tuple]:
    """The rows storage.write would COPY for the file's valid events."""
    received = dt.datetime.now(dt.UTC)
    sub = Submission([], [], "ingest:bench", received)
    rows: list[tuple] = []
    seen: set = set()
    with path.open("rb") as f:
        batch: list = []
        for line in f:
            try:
                batch.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
            if len(batch) == 20_000:
                rows += _rows(batch, received, sub, seen)
                batch = []
        rows += _rows(batch, received, sub, seen)
    return rows


def _rows(batch: list, received: dt.datetime, sub: Submission, seen: set) -> list[tuple]:
    events, _ = validate_events(batch, received)
    out = []
    for e in events:
        if e.event_id not in seen:  # the stored rows: one per event id
            seen.add(e.event_id)
            out.append(storage._event_row(e, sub, sub.received_day))
    return out


class ServerCpu:
    """CPU seconds PostgreSQL used (its postmaster, live backends and the exited ones), read
    from /proc when its postmaster.pid is in the URL's socket folder; else None."""

    def __init__(self, url: str) -> None:
        host = conninfo_to_dict(url).get("host") or ""
        pid_file = Path(str(host)) / "postmaster.pid"
        self.pid = int(pid_file.read_text().split()[0]) if pid_file.is_file() else None

    def __call__(self) -> float | None:
        if self.pid is None or not Path(f"/proc/{self.pid}").exists():
            return None
        ticks = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            if int(entry.name) == self.pid:  # its own time and its waited-for children's
                ticks += sum(int(f) for f in fields[11:15])
            elif int(fields[1]) == self.pid:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _per_row(seconds: float | None, rows: int) -> str:
    return "?" if seconds is None else f"{seconds / rows * 1e6:.1f}"


def plain_copy(url: str, rows: list[tuple]) -> float:
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE public.copy_ceiling")
        conn.commit()
        statement = f"COPY public.copy_ceiling ({storage.EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        start = time.perf_counter()
        for i in range(0, len(rows), COPY_ROWS):
            with conn.transaction(), conn.cursor().copy(statement) as copy:
                copy.set_types(storage.EVENT_TYPES)
                for row in rows[i : i + COPY_ROWS]:
                    copy.write_row(row)
        return time.perf_counter() - start


def crm_ingest(url: str, path: Path, workers: int) -> tuple[float, str]:
    env = {**os.environ, "CRM_DATABASE_URL": url}
    cmd = [sys.executable, "-m", "crm", "ingest", str(path), "-q"]
    if workers:
        cmd += ["--workers", str(workers)]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, check=True)
    return time.perf_counter() - start, out.stdout.decode().strip().splitlines()[-1]


def stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM raw.events").fetchone()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visitors", type=int, default=10_500)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--file", type=Path, help="a JSONL file to load instead of simulating one")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="crm ingest --workers (0: default)")
    ap.add_argument("--database-url", default=None, help="a scratch database (emptied!)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="crm-ingest-bench-"))
    try:
        path = args.file
        if path is None:
            path = work / "events.jsonl"
            subprocess.run(
                [sys.executable, "-m", "crm", "simulate", "--visitors", str(args.visitors),
                 "--days", str(args.days), "--out", str(path)],
                cwd=ROOT, check=True, capture_output=True,
            )
        with scratch_database(work, args.database_url) as url:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(CEILING_TABLE)
            t0 = time.perf_counter()
            rows = ceiling_rows(path)
            size = path.stat().st_size
            print(f"file: {path.name}, {size / 1e6:,.0f} MB; {len(rows):,} distinct valid events "
                  f"(rows built in {time.perf_counter() - t0:.1f} s); {os.cpu_count()} cores")
            server_cpu = ServerCpu(url)
            ratios, copy_rates, ingest_rates = [], [], []
            for r in range(1, args.rounds + 1):
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("TRUNCATE raw.events, raw.rejected_events")
                s0, c0 = server_cpu(), time.process_time()
                c_secs = plain_copy(url, rows)
                s1, c1, i0 = server_cpu(), time.process_time(), _children_cpu()
                i_secs, said = crm_ingest(url, path, args.workers)
                s2, i1 = server_cpu(), _children_cpu()
                c_server = None if s0 is None or s1 is None else s1 - s0
                i_server = None if s1 is None or s2 is None else s2 - s1
                n = stored(url)
                if n != len(rows):
                    raise SystemExit(f"crm ingest stored {n:,} events, expected {len(rows):,}")
                r_secs, said_again = crm_ingest(url, path, args.workers)
                if stored(url) != n:
                    raise SystemExit("re-ingesting the same file stored new events")
                c_rate, i_rate = len(rows) / c_secs, len(rows) / i_secs
                ratios.append(i_rate / c_rate)
                copy_rates.append(c_rate)
                ingest_rates.append(i_rate)
                print(f"round {r}: (c) plain COPY {c_rate:>8,.0f} rows/s ({c_secs:.1f} s) | "
                      f"(i) crm ingest {i_rate:>8,.0f} events/s ({i_secs:.1f} s, {said}) = "
                      f"{i_rate / c_rate:.0%} of (c) | (r) again {r_secs:.1f} s, nothing new "
                      f"({said_again})", flush=True)
                print(f"         CPU us per row: (c) client {_per_row(c1 - c0, len(rows))}, "
                      f"server {_per_row(c_server, len(rows))} | (i) crm ingest "
                      f"{_per_row(i1 - i0, len(rows))} (start-up included), server "
                      f"{_per_row(i_server, len(rows))}", flush=True)
            print(f"median: (c) {statistics.median(copy_rates):,.0f} rows/s, (i) "
                  f"{statistics.median(ingest_rates):,.0f} events/s; (i)/(c) median "
                  f"{statistics.median(ratios):.0%}, worst {min(ratios):.0%}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
