"""The simulation as a stream: people in chunks, lines in arrival order, bounded memory.

Two passes. The generation pass simulates `chunk_visitors` people at a time (their
randomness keyed per person, see keyed.py) and spills each chunk's lines, cut into windows
of arrival time, to a scratch folder. The merge pass reads one window at a time from every
chunk and sorts it by (arrival, person, rank, retry), a total order that does not depend on
the chunking, so the bytes are the same for any chunk size. Memory holds one chunk or one
window, plus the population (a few hundred bytes a person).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from simulator.config import DEFAULT_CHUNK_VISITORS, SimConfig
from simulator.hazards import apply_hazards
from simulator.journeys import HOUR, MS, JourneyBuilder, plan_campaigns
from simulator.output import to_json_lines
from simulator.population import Population, build_population
from simulator.products import Catalogue, build_catalogue
from simulator.truth import (
    device_truth,
    event_truth_part,
    identifiers_part,
    identifiers_table,
    people_truth,
    sessions_part,
)

# About this many lines per arrival window (one window is in memory during the merge).
WINDOW_LINES = 400_000
_EVENTS_PER_VISITOR_DAY = 3.3  # what the defaults give, to size the windows
SORT_KEY = ("_arrival", "_person", "_rank", "_retry")
_EVENT_TRUTH_COLUMNS = (
    "event_id", "event_sent", "event_type", "person_id", "device_id", "session_id", "true_ts",
    "client_ts", "arrival_ts", "clock_skew_ms", "is_valid", "invalid_kind", "invalid_field",
    "is_retry", "is_late", "junk_client_id",
)


@dataclass
class SimChunk:
    """A step of the stream: lines continuing the previous chunk's (arrival order), and rows
    of truth tables (`sessions` during generation; `people`, `devices`, `device_users`,
    `identifiers` once after it; `event_truth` beside each batch of lines)."""

    lines: pl.Series
    truth: dict[str, pl.DataFrame]
    # On the chunk that ends the generation pass: how many lines the merge will yield.
    lines_total: int | None = None


@dataclass
class World:
    """The small global pass: what several people share or what must be unique."""

    cfg: SimConfig
    catalogue: Catalogue
    population: Population
    builder: JourneyBuilder
    late_app_rate: float

    @classmethod
    def build(cls, cfg: SimConfig) -> World:
        # Independent streams per stage: tuning one stage does not reshuffle the others.
        catalogue_rng, people_rng, campaign_rng, _ = (
            np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(4)
        )
        catalogue = build_catalogue(catalogue_rng)
        pop = build_population(cfg, people_rng, catalogue.n_categories)
        t0 = int(datetime(cfg.start.year, cfg.start.month, cfg.start.day,
                          tzinfo=UTC).timestamp() * MS)
        campaigns = plan_campaigns(cfg, campaign_rng, pop, t0)
        builder = JourneyBuilder(cfg, pop, catalogue, campaigns)
        return cls(cfg, catalogue, pop, builder, _late_app_rate(cfg, pop))


def _late_app_rate(cfg: SimConfig, pop: Population) -> float:
    """Chance that an app event is late, so that about `late_rate` of all events are: the
    app share of events is estimated from how much people use app devices (push events go
    mostly to apps, hence the push-enabled boost), once for the run, not per chunk."""
    kind = pop.devices["kind_idx"].to_numpy()
    push = pop.devices["push_enabled"].to_numpy()
    dev = pop.usage["device_idx"].to_numpy()
    w = pop.usage["weight"].to_numpy()
    app = kind[dev] > 0
    share = float((w * app).sum() / max(w.sum(), 1e-9))
    push_share = float(push[kind > 0].mean()) if (kind > 0).any() else 0.0
    share = min(1.0, share * (1 + 0.25 * push_share))
    return min(1.0, cfg.late_rate / max(share, 1e-9))


def window_ms(cfg: SimConfig) -> int:
    """Arrival window width: whole hours, a day at most, about WINDOW_LINES lines each.
    It only decides how much is sorted at once, never the order."""
    per_hour = _EVENTS_PER_VISITOR_DAY * cfg.visitors / 24
    hours = int(np.clip(WINDOW_LINES // max(per_hour, 1.0), 1, 24))
    return hours * HOUR


class _Spill:
    """Window pieces of each chunk: in memory when there is one chunk, else Arrow IPC files
    (lz4) in a scratch folder."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.memory: dict[int, list[pl.DataFrame]] = {}
        self.files: dict[int, list[Path]] = {}
        self.n_chunks = 0
        self.lines = 0

    def put(self, frame: pl.DataFrame, window: np.ndarray) -> None:
        chunk = self.n_chunks
        self.n_chunks += 1
        self.lines += frame.height
        order = np.argsort(window, kind="stable")
        frame, window = frame[order], window[order]
        bounds = np.flatnonzero(np.r_[True, window[1:] != window[:-1], True])
        for a, b in itertools.pairwise(bounds):
            w = int(window[a])
            piece = frame.slice(int(a), int(b - a))
            if self.folder is None:
                self.memory.setdefault(w, []).append(piece)
            else:
                path = self.folder / f"w{w:06d}-c{chunk:06d}.arrow"
                piece.write_ipc(path, compression="lz4")
                self.files.setdefault(w, []).append(path)

    def windows(self) -> Iterator[pl.DataFrame]:
        for w in sorted(set(self.memory) | set(self.files)):
            parts = self.memory.pop(w, [])
            for path in self.files.pop(w, []):
                parts.append(pl.read_ipc(path))
                path.unlink()
            yield pl.concat(parts) if len(parts) > 1 else parts[0]


def simulate_chunks(cfg: SimConfig, chunk_visitors: int | None = DEFAULT_CHUNK_VISITORS,
                    workdir: Path | None = None) -> Iterator[SimChunk]:
    """The run as a stream of SimChunk (see its docstring for what comes when).

    `chunk_visitors` people are simulated at a time (None: all at once, no scratch files);
    the output is byte-identical for any value. Scratch files go to a temporary folder
    inside `workdir` (default: the system's), removed at the end.
    """
    if chunk_visitors is not None and chunk_visitors < 1:
        raise ValueError(f"chunk_visitors must be at least 1, got {chunk_visitors}")
    n = cfg.visitors
    step = n if chunk_visitors is None else min(chunk_visitors, n)
    world = World.build(cfg)
    pop, builder = world.population, world.builder
    scratch = None if step >= n else Path(tempfile.mkdtemp(prefix="sim-spill-", dir=workdir))
    try:
        spill = _Spill(scratch)
        width = window_ms(cfg)
        t0 = builder.t0
        first_session = 0
        identifiers: list[pl.DataFrame] = []
        empty = pl.Series("line", [], dtype=pl.String)
        for p0 in range(0, n, step):
            events, sessions = builder.build(p0, min(p0 + step, n))
            events = events.with_columns(
                _session=pl.when(pl.col("_session") >= 0)
                .then(pl.col("_session") + first_session).otherwise(-1))
            lines = apply_hazards(cfg, events, pop.devices, world.late_app_rate)
            del events
            part = event_truth_part(pop, lines).with_columns(
                _json=to_json_lines(lines), **{k: lines[k] for k in SORT_KEY})
            identifiers.append(identifiers_part(pop, lines))
            arrival = lines["_arrival"].to_numpy()
            del lines
            spill.put(part, np.maximum((arrival - t0) // width, 0))
            del part
            yield SimChunk(empty, {"sessions": sessions_part(pop, sessions, first_session)})
            first_session += len(sessions)

        yield SimChunk(empty, {
            "people": people_truth(pop, world.catalogue.categories, builder.registered_at),
            **device_truth(pop),
            "identifiers": identifiers_table(identifiers),
        }, lines_total=spill.lines)
        del identifiers

        line = 0
        for window in spill.windows():
            window = window.sort(list(SORT_KEY))
            truth = window.select(
                pl.int_range(line, line + window.height, dtype=pl.Int64).alias("line"),
                *_EVENT_TRUTH_COLUMNS)
            line += window.height
            yield SimChunk(window["_json"].alias("line"), {"event_truth": truth})
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
