"""A shop in a box: simulated shoppers, their event stream, and the hidden truth behind it.

`simulate(cfg)` returns the stream (JSON lines in the order a collector receives them) and the
truth tables. Everything is drawn from one seeded generator, column-wise, so the same config
gives the same bytes and a million events take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from simulator.config import SimConfig
from simulator.hazards import apply_hazards
from simulator.journeys import JourneyBuilder
from simulator.output import to_json_lines
from simulator.population import build_population
from simulator.products import build_catalogue
from simulator.truth import build_truth

__all__ = ["SimConfig", "Simulation", "simulate"]


@dataclass
class Simulation:
    config: SimConfig
    lines: pl.Series  # one JSON object per event, in arrival order
    truth: dict[str, pl.DataFrame]

    @property
    def run_id(self) -> str:
        c = self.config
        return f"seed{c.seed}-v{c.visitors}-d{c.days}-{c.start.isoformat()}"


def simulate(cfg: SimConfig) -> Simulation:
    # Independent streams per stage: tuning one stage does not reshuffle the others.
    catalogue_rng, people_rng, journey_rng, hazard_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(4)
    )
    catalogue = build_catalogue(catalogue_rng)
    population = build_population(cfg, people_rng, catalogue.n_categories)
    builder = JourneyBuilder(cfg, journey_rng, population, catalogue)
    events, sessions = builder.build()
    stream = apply_hazards(cfg, hazard_rng, events, population.devices)
    lines = to_json_lines(stream)
    truth = build_truth(cfg, population, sessions, stream, catalogue.categories,
                        builder.registered_at)
    return Simulation(cfg, lines, truth)
