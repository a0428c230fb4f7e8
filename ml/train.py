"""Train, gate and score the models against the current marts (what `crm train` runs).

Each model: read its input from the marts, fit on a training part, evaluate on a holdout
beside its baseline, log and register the run in MLflow (the new model becomes champion only
if it beats the current one on the same holdout), then score everyone with the champion and
write the output table to schema `ml` atomically. A shop without enough data for a model
gets its baseline output and a message saying why, never a crash or an empty champion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from sklearn.metrics import silhouette_score

from ml import marts, registry, segments
from ml.warehouse import write_table

MODELS = ("segments",)


@dataclass
class ModelReport:
    """One line of `crm train`'s summary."""

    model: str
    rows_written: int = 0
    table: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    version: str = "baseline"
    promoted: bool = False
    champion_score: float | None = None
    message: str = ""


def _holdout_split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(n * (1 - share)))
    return np.sort(idx[:cut]), np.sort(idx[cut:])


def _silhouette(model: segments.Clustering, frame: pl.DataFrame, seed: int) -> float:
    if frame.height < 3:
        return 0.0
    z = model.scaler.transform(segments._matrix(frame))
    labels = model.kmeans.predict(z)
    if len(set(labels)) < 2 or len(set(labels)) >= len(z):
        return 0.0
    return float(silhouette_score(z, labels, random_state=seed))


def _random_silhouette(model: segments.Clustering, frame: pl.DataFrame, seed: int) -> float:
    if frame.height < 3:
        return 0.0
    z = model.scaler.transform(segments._matrix(frame))
    labels = np.random.default_rng(seed).integers(0, model.k, len(z))
    if len(set(labels)) < 2:
        return 0.0
    return float(silhouette_score(z, labels, random_state=seed))


def train_segments(database_url: str, seed: int = 7) -> ModelReport:
    report = ModelReport("segments", table="ml.user_segments")
    people = marts.people(database_url)
    rules = segments.rule_segments(people)
    outputs = [rules]
    version = "rules"
    try:
        train_idx, hold_idx = _holdout_split(people.height, 0.2, seed)
        fit_on, hold = people[train_idx], people[hold_idx]
        model = segments.fit_clusters(fit_on, segments.ClusterConfig(seed=seed))
        score = _silhouette(model, hold, seed)
        report.metrics = {"holdout_silhouette": score, "k": float(model.k)}
        # Baseline: the same number of groups drawn at random (no structure at all).
        report.baseline = {"holdout_silhouette": _random_silhouette(model, hold, seed)}
        outcome = registry.log_and_gate(
            "segments", model,
            params={"k": model.k, "k_range": "2-6", "features": ",".join(
                segments.CLUSTER_FEATURES), "silhouettes": model.silhouettes, "seed": seed},
            metrics={**report.metrics,
                     "baseline_holdout_silhouette": report.baseline["holdout_silhouette"],
                     "people": float(people.height)},
            score_key="holdout_silhouette",
            snapshot={"people": people},
            rescore_champion=lambda old: _silhouette(old, hold, seed),
        )
        report.promoted, report.champion_score = outcome.promoted, outcome.champion_score
        found = registry.champion("segments")
        champion = found[1] if found and found[1] is not None else model
        version = f"segments-v{outcome.champion_version}"
        outputs.append(segments.assign_clusters(champion, people))
        report.version = outcome.champion_version
    except ValueError as exc:  # too few people or profiles to cluster: rules only
        report.message = f"no clustering ({exc}); rule segments only"
    frame = pl.concat(outputs) if people.height else pl.DataFrame(
        schema={"user_id": pl.String, "segment": pl.String, "assigned_by": pl.String})
    report.rows_written = write_table(database_url, "user_segments", frame, version)
    if not people.height:
        report.message = "no people in crm.users yet: empty segments table"
    return report


TRAINERS: dict[str, Callable[[str, int], ModelReport]] = {"segments": train_segments}


def train(database_url: str, only: list[str] | None = None, seed: int = 7,
          on_step: Callable[[str], None] | None = None) -> list[ModelReport]:
    reports = []
    for name in only or list(TRAINERS):
        if on_step:
            on_step(name)
        reports.append(TRAINERS[name](database_url, seed))
    return reports
