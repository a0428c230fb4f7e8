"""A whole run streamed to where it goes: a JSONL file (truth as parquet beside it) or a
collector over HTTP (truth in schema `sim`), one chunk in memory at a time.

What `crm simulate` calls; the bytes are those of `simulate(cfg).lines` and `.truth`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from simulator import run_id_for
from simulator.config import DEFAULT_CHUNK_VISITORS, SimConfig
from simulator.output import append_jsonl, post_batches
from simulator.stream import SimChunk, simulate_chunks
from simulator.truth import TruthFiles, TruthSink, TruthTables, truth_dir_for


@dataclass(frozen=True)
class RunResult:
    lines: int
    accepted: int = 0  # as the collector answered (posting only)
    rejected: int = 0


def _feed(chunks: Iterator[SimChunk], sink: TruthSink) -> Iterator[SimChunk]:
    """Every chunk's truth to the sink; the chunks that carry lines onwards."""
    for chunk in chunks:
        for name, df in chunk.truth.items():
            sink.add(name, df)
        if chunk.lines.len() or chunk.lines_total is not None:
            yield chunk


def write_files(cfg: SimConfig, out: Path, *,
                chunk_visitors: int | None = DEFAULT_CHUNK_VISITORS,
                workdir: Path | None = None) -> RunResult:
    """JSON lines to `out`, the truth to `<name>.truth/` beside it (see truth_dir_for).
    Scratch files of the merge go to a temporary folder in `workdir` (default: beside
    `out`, which has room for the output anyway)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sink = TruthFiles(truth_dir_for(out), cfg)
    n = 0
    with out.open("wb") as fh:
        for chunk in _feed(simulate_chunks(cfg, chunk_visitors=chunk_visitors,
                                           workdir=workdir or out.parent), sink):
            append_jsonl(chunk.lines, fh)
            n += chunk.lines.len()
    sink.close()
    return RunResult(n)


def post_run(cfg: SimConfig, url: str, write_key: str, database_url: str, *,
             chunk_visitors: int | None = DEFAULT_CHUNK_VISITORS, batch_size: int = 1000,
             concurrency: int = 4, progress: bool = True,
             workdir: Path | None = None) -> RunResult:
    """POST the stream to a collector in arrival order while the truth goes to schema `sim`
    (run_id_for(cfg)) in one transaction, committed once every line has been answered."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    sink = TruthTables(database_url, run_id_for(cfg), cfg)
    chunks = _feed(simulate_chunks(cfg, chunk_visitors=chunk_visitors, workdir=workdir), sink)
    try:
        # The generation pass ends with the number of lines: the progress bar's total.
        total = next(c.lines_total for c in chunks if c.lines_total is not None)
    except BaseException:
        sink.discard()
        raise
    posted = [0]

    def batches() -> Iterator[Sequence[str]]:
        for chunk in chunks:
            lines = chunk.lines.to_list()
            posted[0] += len(lines)
            for i in range(0, len(lines), batch_size):
                yield lines[i:i + batch_size]

    try:
        accepted, rejected = post_batches(batches(), url, write_key, total=total,
                                          concurrency=concurrency, progress=progress)
    except BaseException:
        sink.discard()
        raise
    sink.close()
    return RunResult(posted[0], accepted, rejected)
