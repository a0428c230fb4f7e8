"""MLflow: every training run is logged and registered; `champion` moves only on merit.

A run logs its parameters, metrics beside the baseline's, data sizes, the training snapshot
(parquet, so it can be re-evaluated or queried with DuckDB later) and the model itself, and
registers it under `crm-<model>`. The new version takes the `champion` alias unless it scores
worse than the current champion on the same holdout, the champion's method re-fitted on the
same training part (a tie goes to the newer fit); the decision and both scores are logged.
Scoring always uses the champion.

Tracking defaults to a SQLite store in the project's data folder (`.crm/mlflow.db`);
`MLFLOW_TRACKING_URI` overrides it.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from crm.settings import state_dir

CHAMPION = "champion"
# What a logged model needs to load elsewhere: pinned to what this project runs, so MLflow
# does not spend ~10 s inferring requirements on every run.
PIP_REQUIREMENTS = ["polars", "numpy", "scipy", "scikit-learn", "rectools-lightfm"]


class RegistryError(RuntimeError):
    """The MLflow store is unreachable or unusable; the message names it."""


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def _mlflow():
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Progress bars and "Created version" lines would drown `crm train`'s own summary.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


class _Pickled:
    """A pyfunc wrapper around any picklable model object (LightFM, scikit-learn, params)."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj


@dataclass
class Outcome:
    model: str
    version: str  # registry version of the new run's model
    run_id: str
    metrics: dict[str, float]
    champion_version: str  # after the decision
    promoted: bool
    champion_score: float | None  # the previous champion on this holdout, if any
    champion: Any  # the champion's model object after the decision, for scoring


def log_and_gate(
    model: str,
    obj: Any,
    *,
    params: dict[str, Any],
    metrics: dict[str, float],
    score_key: str,
    snapshot: dict[str, pl.DataFrame],
    rescore_champion: Callable[[Any], float] | None = None,
    higher_is_better: bool = True,
) -> Outcome:
    """Log one training run, register its model and decide the champion.

    `metrics[score_key]` is the new model's holdout score; `rescore_champion(old_obj)` scores
    the current champion on the same holdout (None: compare with its logged score)."""
    try:
        mlflow = _mlflow()
        from mlflow import MlflowClient
        from mlflow.pyfunc import PythonModel

        client = MlflowClient()
        name = f"crm-{model}"
        mlflow.set_experiment(f"crm-{model}")
    except Exception as exc:  # corrupt file, unreachable server, wrong scheme
        raise RegistryError(f"MLflow store {tracking_uri()!r} is not usable: {exc}") from exc

    class Wrapper(PythonModel):
        def __init__(self, wrapped: _Pickled) -> None:
            self.wrapped = wrapped

        def predict(self, context, model_input, params=None):
            raise NotImplementedError("scored through ml.train, not served")

    previous = _champion(client, name)
    old_score: float | None = None
    if previous is not None:
        old_obj, old_metrics = previous[1], previous[2]
        old_score = rescore_champion(old_obj) if rescore_champion and old_obj is not None \
            else old_metrics.get(score_key)
    new_score = metrics[score_key]
    # Not worse on the same holdout: a tie goes to the newer fit (the same method on fresher
    # data); a worse score keeps the champion.
    better = old_score is None or (new_score >= old_score if higher_is_better
                                   else new_score <= old_score)
    with mlflow.start_run(run_name=model) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for label, frame in snapshot.items():
            path = Path(tmp) / f"{label}.parquet"
            frame.write_parquet(path)
            mlflow.log_artifact(str(path), artifact_path="snapshot")
            mlflow.log_metric(f"rows_{label}", frame.height)
        if old_score is not None:
            mlflow.log_metric(f"champion_{score_key}", old_score)
        mlflow.set_tag("promoted", str(better))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Wrapper(_Pickled(obj)),
            pip_requirements=PIP_REQUIREMENTS, registered_model_name=name,
        )
        version = str(info.registered_model_version)
        with open(Path(tmp) / "model.pkl", "wb") as f:
            pickle.dump(obj, f)
        mlflow.log_artifact(str(Path(tmp) / "model.pkl"), artifact_path="pickle")
        run_id = run.info.run_id
    if better:
        client.set_registered_model_alias(name, CHAMPION, version)
    # The previous champion was loaded above; a stored model that no longer loads gives way.
    keep_old = not better and previous[1] is not None
    champion_version = previous[0] if not better else version
    return Outcome(model, version, run_id, metrics, champion_version, better, old_score,
                   previous[1] if keep_old else obj)


def _champion(client, name: str) -> tuple[str, Any, dict[str, float]] | None:
    """(version, model object, logged metrics) of the current champion, or None."""
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # no such model or alias yet
        return None
    run = client.get_run(mv.run_id)
    obj = load_pickled(mv.run_id)
    return str(mv.version), obj, dict(run.data.metrics)


def load_pickled(run_id: str) -> Any:
    mlflow = _mlflow()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="pickle/model.pkl", dst_path=tmp)
        except Exception:
            return None
        with open(path, "rb") as f:
            return pickle.load(f)


def champion(model: str) -> tuple[str, Any] | None:
    """(version, model object) of `model`'s champion, for scoring."""
    from mlflow import MlflowClient

    _mlflow()
    found = _champion(MlflowClient(), f"crm-{model}")
    return None if found is None else (found[0], found[1])
