"""The models of ml/ as assets: each depends on exactly the marts it reads and writes its `ml`
table through ml.train (the same code as `crm train`: MLflow gating, champion scoring).

Checks: the champion beats its baseline on the holdout (recorded with each materialisation),
every person in crm.users has a segment, and no list recommends a product the person bought.
Metadata: rows written, holdout metrics beside the baseline, segment sizes, plots and the
MLflow run links.
"""


import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from dagster_project import plots
from dagster_project.resources import CrmDatabase, MlflowTracking


def _k(*parts: str) -> dg.AssetKey:
    return dg.AssetKey(list(parts))


# The tables each model reads (ml/marts.py and ml/train.py), as dbt asset keys.
PEOPLE_INPUTS = [_k("crm", "users"), _k("crm", "user_features"), _k("crm", "fct_sessions"),
                 _k("intermediate", "int_event_person")]
LIFECYCLE = _k("ml", "user_lifecycle")
SEGMENTS = _k("ml", "user_segments")
RECOMMENDATIONS = _k("ml", "user_recommendations")
SEND_WINDOWS = _k("ml", "user_send_windows")


@dataclass(frozen=True)
class ModelAsset:
    model: str  # ml.train.TRAINERS key and MLflow experiment crm-<model>
    key: dg.AssetKey
    reads: list[dg.AssetKey]
    score_key: str
    higher_is_better: bool
    description: str


MODELS = [
    ModelAsset("lifecycle", LIFECYCLE,
               [_k("crm", "purchase_history"), _k("crm", "user_features")],
               "holdout_mae", False,
               "BG/NBD + Gamma-Gamma: each buyer's chance of being active, expected orders "
               "and 12-month value; baseline: the buyer's own past order rate."),
    ModelAsset("segments", SEGMENTS, [*PEOPLE_INPUTS, LIFECYCLE],
               "holdout_silhouette", True,
               "Rule segments plus behaviour clusters for everyone in crm.users; baseline: "
               "as many random groups."),
    ModelAsset("recs", RECOMMENDATIONS,
               [*PEOPLE_INPUTS, _k("staging", "stg_events"), _k("crm", "purchase_history"),
                _k("crm", "dim_products"), SEGMENTS],
               "precision_at_10", True,
               "LightFM hybrid top-10 lists (cold start by segment and device), also written "
               "as ml.user_recommendation; baseline: popularity."),
    ModelAsset("send-time", SEND_WINDOWS,
               [*PEOPLE_INPUTS, _k("crm", "push_tokens")],
               "holdout_hit_rate", True,
               "Best local hour and channel per person; baseline: one hour for everyone."),
]
CHAMPION_CHECK = "champion_beats_baseline"


class TrainConfig(dg.Config):
    seed: int = 7


def champion_and_baseline(report, spec: ModelAsset) -> tuple[float | None, float | None]:
    """The champion's holdout score after the decision (the new fit if promoted, else the old
    champion re-scored on the same holdout) and the baseline's."""
    if report.version in ("baseline", "rules", "popularity"):
        return None, report.baseline.get(spec.score_key)
    score = report.metrics.get(spec.score_key) if report.promoted else report.champion_score
    return score, report.baseline.get(spec.score_key)


def _metrics_table(report) -> dg.MetadataValue:
    lines = ["| metric | model | baseline |", "|---|---:|---:|"]
    for name in sorted(set(report.metrics) | set(report.baseline)):
        model, base = report.metrics.get(name), report.baseline.get(name)
        lines.append(f"| {name} | {'' if model is None else f'{model:.4f}'} | "
                     f"{'' if base is None else f'{base:.4f}'} |")
    return dg.MetadataValue.md("\n".join(lines))


def _mlflow_links(mlflow: MlflowTracking, model: str, since_ms: int) -> dict[str, object]:
    """Links to this materialisation's training run and to the champion's run."""
    import mlflow as mlflow_module
    from mlflow import MlflowClient

    from ml.registry import CHAMPION, tracking_uri

    mlflow_module.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    links: dict[str, object] = {"mlflow_tracking_uri": tracking_uri()}
    experiment = client.get_experiment_by_name(f"crm-{model}")
    if experiment is None:
        return links
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"attributes.start_time >= {since_ms}",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if runs:
        links["mlflow_run"] = dg.MetadataValue.url(
            mlflow.run_url(experiment.experiment_id, runs[0].info.run_id))
    try:
        champion = client.get_model_version_by_alias(f"crm-{model}", CHAMPION)
        links["mlflow_champion_run"] = dg.MetadataValue.url(
            mlflow.run_url(experiment.experiment_id, champion.run_id))
    except Exception:  # no champion yet (a shop with too little data)
        pass
    return links


def _extra_metadata(spec: ModelAsset, report, db: CrmDatabase) -> dict[str, object]:
    """What each model's page shows beyond the shared figures."""
    out: dict[str, object | None] = {}
    if spec.model == "lifecycle":
        values = [r[0] for r in db.query("select p_active from ml.user_lifecycle "
                                         "where p_active is not null")]
        out["p_active_plot"] = plots.histogram("chance of being active", values, "p_active")
        if "holdout_actual" in report.metrics:
            out["holdout_plot"] = plots.grouped_bars(
                "holdout repeat purchases", {
                    "actual": {"orders": report.metrics["holdout_actual"]},
                    "model": {"orders": report.metrics.get("holdout_predicted", 0.0)},
                    "baseline": {"orders": report.baseline.get("holdout_predicted", 0.0)}})
    elif spec.model == "segments":
        rows = db.query("select assigned_by, segment, count(*) from ml.user_segments "
                        "group by 1, 2 order by 1, 3 desc")
        lines = ["| assigned by | segment | people |", "|---|---|---:|"]
        lines += [f"| {by} | {segment} | {n:,} |" for by, segment, n in rows]
        out["segment_sizes"] = dg.MetadataValue.md("\n".join(lines))
    elif spec.model == "recs" and report.metrics:
        keys = ("precision_at_10", "recall_at_10", "coverage")
        out["precision_plot"] = plots.grouped_bars(
            "holdout ranking quality", {
                "LightFM": {k: report.metrics.get(k, 0.0) for k in keys},
                "popularity": {k: report.baseline.get(k, 0.0) for k in keys}})
    elif spec.model == "send-time":
        hours = [r[0] for r in db.query("select best_local_hour from ml.user_send_windows")]
        out["best_hour_plot"] = plots.histogram("best local hour", hours, "hour")
    return {k: v for k, v in out.items() if v is not None}


def _model_asset(spec: ModelAsset) -> dg.AssetsDefinition:
    direction = "higher" if spec.higher_is_better else "lower"

    @dg.asset(
        key=spec.key, deps=spec.reads, group_name="models", kinds={"python", "mlflow"},
        description=spec.description,
        check_specs=[dg.AssetCheckSpec(
            CHAMPION_CHECK, asset=spec.key,
            description=f"The champion's holdout {spec.score_key} is better ({direction} is "
            "better) than the baseline's on the same holdout.")],
    )
    def train_model(context: dg.AssetExecutionContext, config: TrainConfig,
                    crm_db: CrmDatabase, mlflow: MlflowTracking) -> dg.MaterializeResult:
        from ml.marts import MartsMissing
        from ml.registry import RegistryError
        from ml.train import TRAINERS

        mlflow.apply()
        started_ms = int(time.time() * 1000) - 1000
        try:
            report = TRAINERS[spec.model](crm_db.resolved_url(), config.seed)
        except (MartsMissing, RegistryError) as exc:
            raise dg.Failure(description=str(exc)) from None
        if report.message:
            context.log.info(f"{spec.model}: {report.message}")
        champion, baseline = champion_and_baseline(report, spec)
        if champion is None or baseline is None:
            passed = False
        else:
            passed = champion > baseline if spec.higher_is_better else champion < baseline
        check = dg.AssetCheckResult(
            check_name=CHAMPION_CHECK, passed=passed,
            metadata={"champion": float("nan") if champion is None else float(champion),
                      "baseline": float("nan") if baseline is None else float(baseline),
                      "score": spec.score_key, "champion_version": report.version},
            description=report.message or None)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": report.rows_written,
                "table": report.table,
                "metrics_vs_baseline": _metrics_table(report),
                "champion_version": report.version,
                "promoted": report.promoted,
                **({"note": report.message} if report.message else {}),
                **_extra_metadata(spec, report, crm_db),
                **_mlflow_links(mlflow, spec.model, started_ms),
            },
            check_results=[check],
        )

    train_model.__name__ = spec.key.path[-1]
    return train_model


MODEL_ASSETS = [_model_asset(spec) for spec in MODELS]


@dg.asset_check(asset=SEGMENTS, description="Every person in crm.users has a segment.")
def everyone_has_a_segment(crm_db: CrmDatabase) -> dg.AssetCheckResult:
    # A join, not NOT EXISTS inside FILTER: that stays a per-row subplan (46 s on 25k people).
    missing, people = crm_db.query(
        "select count(*) filter (where s.user_id is null), count(*) from crm.users u "
        "left join (select distinct user_id from ml.user_segments) s "
        "on s.user_id = u.user_id::text")[0]
    return dg.AssetCheckResult(passed=missing == 0,
                               metadata={"people_without_segment": missing, "people": people})


BOUGHT_AND_RECOMMENDED_SQL = """
with bought as (
    select distinct h.user_id::text as user_id, item ->> 'product_id' as product_id
    from crm.purchase_history h
    cross join lateral jsonb_array_elements(
        case when jsonb_typeof(h.order_items) = 'array' then h.order_items else '[]' end) item
    where h.user_id is not null
)
select count(*), count(distinct r.user_id)
from ml.user_recommendations r join bought b using (user_id, product_id)
"""


@dg.asset_check(asset=RECOMMENDATIONS,
                description="No list recommends a product its person already bought.")
def no_bought_products_recommended(crm_db: CrmDatabase) -> dg.AssetCheckResult:
    rows, people = crm_db.query(BOUGHT_AND_RECOMMENDED_SQL)[0]
    lists = crm_db.scalar("select count(distinct user_id) from ml.user_recommendations")
    return dg.AssetCheckResult(passed=rows == 0, metadata={
        "bought_products_recommended": rows, "people_affected": people, "lists": lists})


CHECK_FUNCTIONS: list[Callable] = [everyone_has_a_segment, no_bought_products_recommended]

defs = dg.Definitions(assets=MODEL_ASSETS, asset_checks=CHECK_FUNCTIONS)
