"""`crm ingest` of files many pieces long: worker processes, repeats across pieces, gzip input,
bounded memory and the progress bar."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

from collector.ingest import ingest_file, ingest_stream
from tests.events import batch, page_view

ROOT = Path(__file__).resolve().parents[1]


def _lines(events: list[dict]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def _count(db, source: str) -> int:
    return db.execute("SELECT count(*) FROM raw.events WHERE source = %s", (source,)).fetchone()[0]


def test_pieces_through_workers_store_each_event_once(tmp_path, database_url, clean_raw):
    events = batch(600)
    # Repeats a piece apart, so two workers may meet on the same new events at once.
    data = _lines(events) + _lines(events[::3]) + b"{broken\n" + _lines(events[100:400])
    path = tmp_path / "pieces.jsonl"
    path.write_bytes(data)
    for _ in range(2):  # the second load finds every event stored: nothing new, same counts
        with path.open("rb") as f:
            summary = ingest_stream(f, database_url=database_url, source="ingest:pieces.jsonl",
                                    workers=2, piece_bytes=4096)
        assert (summary.accepted, summary.rejected) == (600 + 200 + 300, 1)
        assert _count(clean_raw, "ingest:pieces.jsonl") == 600
    broken = clean_raw.execute(
        "SELECT batch_index, errors FROM raw.rejected_events WHERE source = %s",
        ("ingest:pieces.jsonl",),
    ).fetchall()
    # Its position and line among all lines of the file, once per load.
    assert [b[0] for b in broken] == [800, 800]
    assert all("line 801" in b[1][0] for b in broken)


def test_gzip_file_is_read_as_its_lines(tmp_path, database_url, clean_raw):
    events = batch(50)
    path = tmp_path / "export.jsonl.gz"
    path.write_bytes(gzip.compress(_lines(events)))
    summary = ingest_file(str(path), database_url=database_url, progress=False, workers=1)
    assert (summary.accepted, summary.rejected) == (50, 0)
    assert _count(clean_raw, "ingest:export.jsonl.gz") == 50


def test_progress_bar_shows_bytes_of_the_file(tmp_path, database_url, clean_raw):
    path = tmp_path / "progress.jsonl"
    path.write_bytes(_lines(batch(300)))
    env = {**os.environ, "CRM_DATABASE_URL": database_url, "COLUMNS": "120",
           "FORCE_COLOR": "0", "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
    out = subprocess.run([sys.executable, "-m", "crm", "ingest", str(path)], cwd=ROOT, env=env,
                         capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    shown = out.stderr.decode()  # the bar is on stderr; it ends at the whole file stored
    size_kb = f"{path.stat().st_size / 1000:.1f}"
    assert "progress.jsonl" in shown and f"{size_kb}/{size_kb} kB" in shown, shown
    assert out.stdout.decode().strip().splitlines()[-1] == "accepted 300, rejected 0"


RSS_PROBE = textwrap.dedent("""
    import resource, sys
    import collector.ingest as ingest
    url, small, big, piece = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ingest.PIECE_BYTES = piece
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The small file first: the one-time costs (pool, imports, buffers) are in the peak then.
    ingest.ingest_file(small, database_url=url, progress=False, workers=1)
    before = peak()
    summary = ingest.ingest_file(big, database_url=url, progress=False, workers=1)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(summary.accepted, peak() - before, workers)
""")


def test_memory_stays_bounded_for_a_file_many_pieces_long(tmp_path, database_url, clean_raw):
    one = _lines(batch(2000))  # about 0.5 MB; repeated, so every piece after the first repeats
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    small.write_bytes(one * 4)
    with big.open("wb") as f:
        for _ in range(80):
            f.write(one)
    size = big.stat().st_size
    piece = 256 << 10
    assert size > 150 * piece
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, database_url, str(small), str(big), str(piece)],
        cwd=ROOT, capture_output=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr.decode()
    accepted, growth_kb, worker_peak_kb = map(int, out.stdout.split())
    assert accepted == 80 * 2000
    assert _count(clean_raw, "ingest:small.jsonl") == 2000  # stored once, from the first file
    # Twenty times the small file costs the reader far less than the file (40 MB; read whole,
    # it would be more than that in bytes alone), and a worker holds one piece at a time.
    assert growth_kb * 1024 < size / 2, (growth_kb, size)
    assert worker_peak_kb * 1024 < 150 << 20, worker_peak_kb


def test_a_deadlocked_write_is_written_again_not_rejected(database_url, clean_raw):
    """Another writer takes the same two new events in the opposite order: PostgreSQL breaks
    the cycle by rolling our transaction back; the flush is written again, nothing refused."""
    import asyncio
    import datetime as dt
    import threading
    import uuid

    import psycopg

    from collector import storage
    from collector.storage import Submission
    from collector.validation import validate_events

    low, high = uuid.UUID(int=1 << 120), uuid.UUID(int=2 << 120)
    received = dt.datetime.now(dt.UTC)
    events, _ = validate_events([page_view(event_id=str(k)) for k in (high, low)], received)
    sub = Submission(events, [], "ingest:deadlock", received)
    day = received.date()
    clean_raw.execute("SELECT raw.ensure_event_partitions(%s, %s)", (day, day))
    clean_raw.commit()

    insert = ("INSERT INTO raw.events (event_id, event_type, event_ts, received_at, source, "
              "payload, received_day) VALUES (%s, 'page_view', now(), now(), 'ingest:other', "
              "'{}', %s)")
    other = psycopg.connect(database_url)
    other.execute("SET deadlock_timeout = '20s'")  # we, not the other writer, see the cycle
    other.execute(insert, (high, day))  # holds `high`, uncommitted

    def take_low_then_commit() -> None:
        import time

        time.sleep(0.3)  # our write holds `low` and waits on `high` by now
        other.execute(insert, (low, day))  # waits on us: a cycle
        other.commit()

    thread = threading.Thread(target=take_low_then_commit)

    async def ours() -> int:
        conn = await psycopg.AsyncConnection.connect(database_url)
        await conn.execute("SET deadlock_timeout = '1s'")
        await storage.prepare(conn)
        thread.start()
        try:
            return await storage.write(conn, [sub])
        finally:
            await conn.close()

    stored = asyncio.run(ours())
    thread.join()
    other.close()
    assert not sub.refused, [r.errors for r in sub.refused]
    assert stored == 0  # the other writer committed both first; ours found them stored
    assert clean_raw.execute(
        "SELECT count(*) FROM raw.events WHERE event_id IN (%s, %s)", (low, high)
    ).fetchone()[0] == 2
