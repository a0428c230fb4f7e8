"""The simulator's streaming path: same bytes whatever the chunking, scratch files cleaned
up, bounded memory, and `crm simulate` (file and collector) on that path."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import polars as pl
import psycopg
import pytest
from typer.testing import CliRunner

from simulator import SimConfig, run_id_for, simulate, simulate_chunks
from simulator.run import post_run, write_files
from simulator.truth import TRUTH_TABLES, truth_dir_for
from tests.recording_collector import Request, recording_collector

CFG = SimConfig(visitors=60, days=7, seed=3)
# Posted with its own seed: raw.events is shared by the session's tests, and another test
# counts the rows of CFG's event ids.
POSTED = replace(CFG, seed=13)
REPO = Path(__file__).resolve().parents[1]


def _files(out: Path) -> dict[str, bytes]:
    folder = truth_dir_for(out)
    return {"events.jsonl": out.read_bytes(),
            **{p.name: p.read_bytes() for p in sorted(folder.iterdir())}}


def test_same_seed_gives_the_same_bytes_and_truth_whatever_the_chunking(tmp_path: Path) -> None:
    written = {}
    for chunk in (1, 7, None):
        out = tmp_path / f"c{chunk}" / "events.jsonl"
        result = write_files(CFG, out, chunk_visitors=chunk)
        written[chunk] = _files(out)
        assert result.lines == out.read_bytes().count(b"\n")
    assert set(written[None]) == {"events.jsonl", "run.json",
                                  *(f"{t}.parquet" for t in TRUTH_TABLES)}
    assert written[1] == written[None]
    assert written[7] == written[None]
    # The in-memory API gives the same lines and truth as the files.
    sim = simulate(CFG, chunk_visitors=7)
    assert ("\n".join(sim.lines) + "\n").encode() == written[None]["events.jsonl"]
    folder = truth_dir_for(tmp_path / "cNone" / "events.jsonl")
    for name in TRUTH_TABLES:
        assert sim.truth[name].equals(pl.read_parquet(folder / f"{name}.parquet")), name
    truth = sim.truth["event_truth"]
    assert truth["line"].to_list() == list(range(len(sim.lines)))
    assert truth["arrival_ts"].is_sorted()  # arrival order across chunk boundaries
    other = tmp_path / "seed4" / "events.jsonl"
    write_files(replace(CFG, seed=4), other, chunk_visitors=7)
    assert other.read_bytes() != written[None]["events.jsonl"]


def test_scratch_files_are_removed_even_when_the_reader_stops_early(tmp_path: Path) -> None:
    chunks = simulate_chunks(CFG, chunk_visitors=10, workdir=tmp_path)
    seen = 0
    for chunk in chunks:
        if chunk.lines.len():
            seen += 1
            break
    assert seen == 1 and list(tmp_path.iterdir()), "the merge reads from scratch files"
    chunks.close()
    assert list(tmp_path.iterdir()) == []
    for _ in simulate_chunks(CFG, chunk_visitors=10, workdir=tmp_path):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_chunk_size_below_one_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="chunk_visitors must be at least 1, got 0"):
        next(simulate_chunks(CFG, chunk_visitors=0))
    from crm.cli import app

    run = CliRunner().invoke(app, ["simulate", "--visitors", "5", "--chunk-visitors", "0",
                                   "--out", "x.jsonl"])
    assert run.exit_code != 0 and "--chunk-visitors" in run.output


_PEAK = """
import resource, sys
from pathlib import Path
from simulator import SimConfig
from simulator.run import write_files
visitors, chunk, out = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
write_files(SimConfig(visitors=visitors, days=14, seed=1), out,
            chunk_visitors=None if chunk == "all" else int(chunk))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_kb(visitors: int, chunk: str, out: Path) -> int:
    done = subprocess.run([sys.executable, "-c", _PEAK, str(visitors), chunk, str(out)],
                          cwd=REPO, capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def test_peak_memory_does_not_grow_with_the_number_of_people(tmp_path: Path) -> None:
    # Six times the people: the whole run in memory grows by about 3 KB an event
    # (~0.9 GB here); streamed in chunks of 500 people it stays within one chunk's worth.
    small = _peak_kb(1000, "500", tmp_path / "s" / "events.jsonl")
    large = _peak_kb(6000, "500", tmp_path / "l" / "events.jsonl")
    events = (tmp_path / "l" / "events.jsonl").read_bytes().count(b"\n")
    assert events > 200_000
    assert large - small < 150_000, (small, large)


def test_crm_simulate_writes_the_streamed_bytes(tmp_path: Path) -> None:
    from crm.cli import app

    reference = tmp_path / "ref" / "events.jsonl"
    write_files(CFG, reference, chunk_visitors=None)
    out = tmp_path / "cli" / "events.jsonl"
    run = CliRunner().invoke(app, ["simulate", "--visitors", "60", "--days", "7", "--seed", "3",
                                   "--chunk-visitors", "9", "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert _files(out) == _files(reference)
    assert json.loads((truth_dir_for(out) / "run.json").read_text())["visitors"] == 60


def test_posting_streams_every_line_in_order_and_the_truth_to_schema_sim(
    collector_factory, database_url: str
) -> None:
    sim = simulate(POSTED)
    collector = collector_factory()
    truth = sim.truth["event_truth"]
    for _ in range(2):  # re-posting the same run replaces its truth rows
        result = post_run(POSTED, collector.url, collector.write_key, database_url,
                          chunk_visitors=13, batch_size=200, concurrency=1, progress=False)
        assert result.lines == len(sim.lines)
        assert result.rejected == (~truth["is_valid"]).sum()
        assert result.accepted == truth["is_valid"].sum()
    run_id = run_id_for(POSTED)
    with psycopg.connect(database_url) as conn:
        for name in TRUTH_TABLES:
            n = conn.execute(f"SELECT count(*) FROM sim.{name} WHERE run_id = %s",
                             (run_id,)).fetchone()[0]
            assert n == sim.truth[name].height, name
        stored = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM raw.events "
            "WHERE event_id = ANY(%s::uuid[])",
            (truth.filter(pl.col("is_valid"))["event_id"].to_list(),)).fetchone()
    n_valid = truth.filter(pl.col("is_valid"))["event_id"].n_unique()
    assert stored == (n_valid, n_valid)  # retries and the second post stored once


def _accept_all(request: Request, n: int) -> tuple[int, dict[str, str], bytes]:
    batch = orjson.loads(gzip.decompress(request[1]))["batch"]
    return 202, {}, orjson.dumps({"accepted": len(batch)})


def test_posting_with_one_worker_sends_the_whole_stream_in_order(
    database_url: str,
) -> None:
    with recording_collector(_accept_all) as (url, requests):
        result = post_run(POSTED, url, "wk", database_url, chunk_visitors=11, batch_size=300,
                          concurrency=1, progress=False)
    lines = simulate(POSTED).lines.to_list()
    sent = [orjson.dumps(e) for _, body in requests
            for e in orjson.loads(gzip.decompress(body))["batch"]]
    assert sent == [orjson.dumps(orjson.loads(line)) for line in lines]
    assert result.lines == result.accepted == len(lines)


def test_json_lines_escape_quotes_and_backslashes_and_leave_absent_fields_out() -> None:
    from simulator.output import to_json_lines

    ev = pl.DataFrame({
        "event": ["search", "page_view", "search", "click"],
        "timestamp": ["t1", "t2", "t3", "t4"],
        "search_query": ['say "hi"', None, "plain", None],
        "page_url": [None, "/a\\b", None, "/c"],
        "scroll_depth": [None, None, None, 50],
        "_hidden": [1, 2, 3, 4],
    })
    got = [orjson.loads(line) for line in to_json_lines(ev)]
    assert got == [
        {"event": "search", "timestamp": "t1", "search_query": 'say "hi"'},
        {"event": "page_view", "timestamp": "t2", "page_url": "/a\\b"},
        {"event": "search", "timestamp": "t3", "search_query": "plain"},
        {"event": "click", "timestamp": "t4", "page_url": "/c", "scroll_depth": 50},
    ]
