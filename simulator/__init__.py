"""A shop in a box: simulated shoppers, their event stream, and the hidden truth behind it.

`simulate(cfg)` returns the stream (JSON lines in the order a collector receives them) and the
truth tables, all in memory. `simulate_chunks(cfg, chunk_visitors=...)` gives the same bytes
as a stream of chunks in bounded memory (what `crm simulate` uses). Randomness is keyed per
person, column-wise, so the same config gives the same bytes whatever the chunking and a
million events take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from simulator.config import SimConfig

if TYPE_CHECKING:
    import polars as pl

    from simulator.stream import SimChunk, simulate_chunks

__all__ = ["SimChunk", "SimConfig", "Simulation", "run_id_for", "simulate", "simulate_chunks"]


def __getattr__(name: str) -> Any:
    # The generator (polars, scipy) loads on first use, not with the package: every `crm`
    # command imports the simulator's CLI module, and most of them never simulate.
    if name in ("SimChunk", "simulate_chunks"):
        from simulator import stream

        return getattr(stream, name)
    raise AttributeError(f"module 'simulator' has no attribute {name!r}")


def run_id_for(cfg: SimConfig) -> str:
    return f"seed{cfg.seed}-v{cfg.visitors}-d{cfg.days}-{cfg.start.isoformat()}"


@dataclass
class Simulation:
    config: SimConfig
    lines: pl.Series  # one JSON object per event, in arrival order
    truth: dict[str, pl.DataFrame]

    @property
    def run_id(self) -> str:
        return run_id_for(self.config)


def simulate(cfg: SimConfig, chunk_visitors: int | None = None) -> Simulation:
    """The whole run in memory (all people in one chunk unless `chunk_visitors` is given)."""
    import polars as pl

    from simulator.stream import simulate_chunks
    from simulator.truth import TRUTH_TABLES

    lines: list[pl.Series] = []
    parts: dict[str, list[pl.DataFrame]] = {name: [] for name in TRUTH_TABLES}
    for chunk in simulate_chunks(cfg, chunk_visitors=chunk_visitors):
        if chunk.lines.len():
            lines.append(chunk.lines)
        for name, df in chunk.truth.items():
            parts[name].append(df)
    all_lines = pl.concat(lines) if lines else pl.Series("line", [], dtype=pl.String)
    return Simulation(cfg, all_lines, {name: pl.concat(dfs) for name, dfs in parts.items()})
