"""`crm train` and `crm mlflow-ui`: the models of `ml/`, trained against the current marts."""

from __future__ import annotations

import os
import subprocess
import sys

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def train_command(
    only: list[str] = typer.Option(
        None, "--only",
        help="Train only these models (repeatable): lifecycle, segments, recs, send-time.",
    ),
    seed: int = typer.Option(7, help="Random seed (same seed and marts, same models)."),
) -> None:
    """Train, gate (champion in MLflow) and score the models; write the `ml` tables."""
    from crm.settings import database_url
    from ml.marts import MartsMissing
    from ml.registry import RegistryError
    from ml.train import TRAINERS, train

    unknown = sorted(set(only or ()) - set(TRAINERS))
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}; choose from {sorted(TRAINERS)}")
    with console.status("training") as status:
        try:
            reports = train(database_url(), only, seed,
                            on_step=lambda name: status.update(f"training {name}"))
        except (MartsMissing, RegistryError) as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    show_reports(reports)


def show_reports(reports) -> None:
    """The summary table: rows written, holdout metrics beside the baseline, the champion."""
    table = Table(title="crm train")
    for column in ("model", "table", "rows", "holdout", "baseline", "champion"):
        table.add_column(column)
    for r in reports:
        holdout = ", ".join(f"{k} {v:.3f}" for k, v in r.metrics.items())
        baseline = ", ".join(f"{k} {v:.3f}" for k, v in r.baseline.items())
        if r.version == "baseline":
            verdict = "baseline only"
        elif r.promoted:
            verdict = f"new: v{r.version}"
        else:
            verdict = f"kept v{r.version} ({r.champion_score:.3f})"
        table.add_row(r.model, r.table, f"{r.rows_written:,}", holdout, baseline, verdict)
    Console(width=max(Console().width, 140)).print(table)
    for r in reports:
        if r.message:
            console.print(f"{r.model}: {r.message}")


def mlflow_ui_command(
    port: int = typer.Option(5000, help="Port on 127.0.0.1."),
) -> None:
    """Open the MLflow UI on the project's tracking store (http://127.0.0.1:PORT)."""
    from ml.registry import tracking_uri

    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri(),
           "--host", "127.0.0.1", "--port", str(port)]
    console.print(f"MLflow UI on http://127.0.0.1:{port} (store {tracking_uri()})")
    raise typer.Exit(subprocess.call(cmd, env=env))
