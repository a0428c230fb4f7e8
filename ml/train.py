"""Train, gate and score the models against the current marts (what `crm train` runs).

Each model: read its input from the marts, fit on a training part, evaluate on a holdout
beside its baseline, log and register the run in MLflow (the new model becomes champion only
if it beats the current one on the same holdout), then score everyone with the champion and
write the output table to schema `ml` atomically. A shop without enough data for a model
gets its baseline output and a message saying why, never a crash or an empty champion.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import orjson
import polars as pl
from sklearn.metrics import silhouette_score

from crm.settings import shop_timezone
from ml import lifecycle, marts, recs, registry, segments, send_time
from ml.warehouse import read, table_exists, write_table


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


def _adopt(report: ModelReport, outcome: registry.Outcome) -> str:
    """Record MLflow's decision in the report; the output tables' model_version."""
    report.promoted, report.champion_score = outcome.promoted, outcome.champion_score
    report.version = outcome.champion_version
    return f"{outcome.model}-v{outcome.champion_version}"


def _holdout_split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(n * (1 - share)))
    return np.sort(idx[:cut]), np.sort(idx[cut:])


def _silhouette(model: segments.Clustering, frame: pl.DataFrame, seed: int,
                random_groups: bool = False) -> float:
    """Silhouette of `model`'s clusters on `frame`, or (`random_groups`) of as many groups
    drawn at random: the baseline with no structure at all. 0 where it is undefined."""
    if frame.height < 3:
        return 0.0
    z = model.scaler.transform(segments._matrix(frame))
    labels = (np.random.default_rng(seed).integers(0, model.k, len(z)) if random_groups
              else model.kmeans.predict(z))
    if not 2 <= len(set(labels)) < len(z):
        return 0.0
    return float(silhouette_score(z, labels, random_state=seed))


LIFECYCLE_SCHEMA = {"user_id": pl.String, "p_active": pl.Float64,
                    "expected_orders_30d": pl.Float64, "expected_orders_90d": pl.Float64,
                    "expected_value_12m": pl.Float64}


def _lifecycle_baseline(orders: pl.DataFrame, end: dt.datetime) -> pl.DataFrame:
    """Each buyer's own historical order rate and average order: no model, no p_active."""
    if orders.is_empty():
        return pl.DataFrame(schema=LIFECYCLE_SCHEMA)
    per = orders.group_by("person_id").agg(
        n=pl.len(), first=pl.col("ordered_at").min(), avg=pl.col("amount").mean())
    days = ((pl.lit(end) - pl.col("first")).dt.total_seconds() / 86_400).clip(lower_bound=30)
    rate = pl.col("n") / days
    return per.select(
        user_id=pl.col("person_id"), p_active=pl.lit(None, pl.Float64),
        expected_orders_30d=rate * 30, expected_orders_90d=rate * 90,
        expected_value_12m=rate * 365 * pl.col("avg").fill_null(0),
    ).sort("user_id")


def _patch_undefined(scores: pl.DataFrame, baseline: pl.DataFrame,
                     report: ModelReport) -> pl.DataFrame:
    """Rows where the closed forms overflow (extreme parameters on small shops) take the
    baseline's figures instead of NaN; the count is reported."""
    cols = [c for c in LIFECYCLE_SCHEMA if c != "user_id"]
    bad = pl.any_horizontal([~pl.col(c).is_finite() for c in cols if c != "p_active"])
    n_bad = scores.filter(bad).height
    if not n_bad:
        return scores
    report.message = f"{n_bad} customer(s) scored by the baseline (model undefined for them)"
    report.metrics["undefined_rows"] = float(n_bad)
    fixed = scores.filter(bad).select("user_id", "p_active").join(
        baseline.drop("p_active"), on="user_id", how="left")
    return pl.concat([scores.filter(~bad), fixed.select(scores.columns)]).sort("user_id")


def train_lifecycle(database_url: str, seed: int = 7) -> ModelReport:
    """BG/NBD + Gamma-Gamma (ml.lifecycle); the holdout is the last quarter of the order
    history (at most 90 days), the score the mean absolute error of repeat purchases."""
    report = ModelReport("lifecycle", table="ml.user_lifecycle")
    orders, end = marts.orders(database_url), marts.as_of(database_url)
    version = "baseline"
    try:
        if orders.is_empty():
            raise lifecycle.NotEnoughData("no orders yet")
        # The holdout ends at the last order, not at the marts' "now": a shop whose data
        # stopped (an import, a simulation) would otherwise hold out an empty period.
        last = orders["ordered_at"].max()
        calibration_end = last - min(dt.timedelta(days=90), (last - orders["ordered_at"].min()) / 4)
        ev = lifecycle.evaluate(orders, calibration_end, last)
        report.metrics = {"holdout_mae": ev.mae_model, "holdout_predicted": ev.predicted_total,
                          "holdout_actual": float(ev.actual_total)}
        report.baseline = {"holdout_mae": ev.mae_baseline,
                           "holdout_predicted": ev.baseline_total}
        cal = ev.per_customer  # the calibration summary, with each customer's actual count
        actual = cal["actual"].to_numpy()
        t = (last - calibration_end).total_seconds() / 86_400 / 7

        def rescore(old: lifecycle.LifecycleModel) -> float:
            # The champion's method re-fitted on the same calibration part: the stored fit saw
            # the holdout period. (BG/NBD has no settings, so this is a tie by construction.)
            params = lifecycle.fit_bgnbd(cal.select("person_id", "frequency", "recency", "T"))
            predicted = lifecycle.expected_purchases(params, cal, t)
            return float(np.mean(np.abs(predicted - actual)))

        summary = lifecycle.rfm_summary(orders, end=end)
        model = lifecycle.fit(summary)
        outcome = registry.log_and_gate(
            "lifecycle", model,
            params={"r": model.bgnbd.r, "alpha": model.bgnbd.alpha, "a": model.bgnbd.a,
                    "b": model.bgnbd.b, "p": model.gamma_gamma.p, "q": model.gamma_gamma.q,
                    "v": model.gamma_gamma.v, "calibration_end": calibration_end},
            metrics={**report.metrics, "baseline_holdout_mae": ev.mae_baseline,
                     "customers": float(summary.height)},
            score_key="holdout_mae", higher_is_better=False,
            snapshot={"orders": orders}, rescore_champion=rescore,
        )
        version, champion = _adopt(report, outcome), outcome.champion
        scores = lifecycle.predict(champion, summary).rename({"person_id": "user_id"})
        frame = _patch_undefined(scores.select(list(LIFECYCLE_SCHEMA)),
                                 _lifecycle_baseline(orders, end), report)
    except lifecycle.NotEnoughData as exc:
        report.message = f"baseline only: {exc}"
        frame = _lifecycle_baseline(orders, end)
    report.rows_written = write_table(database_url, "user_lifecycle", frame, version)
    return report


def train_segments(database_url: str, seed: int = 7) -> ModelReport:
    report = ModelReport("segments", table="ml.user_segments")
    people = marts.people(database_url)
    if table_exists(database_url, "ml.user_lifecycle"):  # lapsing / high value read it
        people = people.join(
            read(database_url, "select user_id, p_active, expected_value_12m "
                               "from ml.user_lifecycle"), on="user_id", how="left")
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
        report.baseline = {"holdout_silhouette": _silhouette(model, hold, seed, random_groups=True)}
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
        version, champion = _adopt(report, outcome), outcome.champion
        outputs.append(segments.assign_clusters(champion, people))
    except ValueError as exc:  # too few people or profiles to cluster: rules only
        report.message = f"no clustering ({exc}); rule segments only"
    frame = pl.concat(outputs) if people.height else pl.DataFrame(
        schema={"user_id": pl.String, "segment": pl.String, "assigned_by": pl.String})
    report.rows_written = write_table(database_url, "user_segments", frame, version)
    if not people.height:
        report.message = "no people in crm.users yet: empty segments table"
    return report


SEND_SCHEMA = {"user_id": pl.String, "best_local_hour": pl.Int64, "confidence": pl.Float64,
               "channel": pl.String, "push_token": pl.String}
FALLBACK_HOUR = 19  # an evening hour, when nothing at all is known


def train_send_time(database_url: str, seed: int = 7) -> ModelReport:
    """Best local hour and channel per person (ml.send_time); the holdout is the last two
    weeks (a quarter of the history at most), scored by the share of its push opens (else
    active hours) within an hour of the prediction (`open_hit_rate`), beside one hour for
    everyone."""
    report = ModelReport("send-time", table="ml.user_send_windows")
    events, tokens = marts.send_events(database_url), marts.tokens(database_url)
    zones = marts.zones(database_url)
    people = marts.people(database_url)["user_id"]
    default_zone = shop_timezone()
    version = "baseline"
    try:
        if events.is_empty():
            raise send_time.NotEnoughData("no events of identified people yet")
        last = events["ts"].max()  # not the marts' "now": the data may have stopped earlier
        cut = last - min(dt.timedelta(days=14), (last - events["ts"].min()) / 4)
        early, late = events.filter(pl.col("ts") <= cut), events.filter(pl.col("ts") > cut)
        kw = {"default_zone": default_zone}
        model = send_time.fit(early if early.height else events, zones, **kw)
        # Scored on the holdout's push opens; a shop that sent no pushes lately is scored on
        # its activity hours instead (the same measure, a weaker signal), and says so.
        signal, target = "push_opened", late
        if late.filter(pl.col("kind") == "push_opened").is_empty():
            signal, target = "activity", late.with_columns(kind=pl.lit("push_opened"))

        def hit_rate(predictions: pl.DataFrame) -> float:
            try:
                return send_time.open_hit_rate(predictions, target, zones, **kw)
            except send_time.NotEnoughData:  # an empty holdout: nothing to tell models apart
                return 0.0

        hit = hit_rate(send_time.predict(model, tokens))
        base = hit_rate(send_time.predict_baseline(model, tokens))
        report.metrics = {"holdout_hit_rate": hit}
        report.baseline = {"holdout_hit_rate": base}
        full = send_time.fit(events, zones, **kw)
        outcome = registry.log_and_gate(
            "send-time", full,
            params={**full.params.__dict__, "default_zone": default_zone, "holdout_start": cut,
                    "holdout_signal": signal},
            metrics={**report.metrics, "baseline_holdout_hit_rate": base,
                     "people": float(full.person_ids.len()),
                     "holdout_opens": float(late.filter(pl.col("kind") == "push_opened").height)},
            score_key="holdout_hit_rate", snapshot={"events": events},
            # The champion's settings re-fitted on the same early part: its stored fit saw the
            # holdout period.
            rescore_champion=lambda old: hit_rate(send_time.predict(send_time.fit(
                early if early.height else events, zones, params=old.params, **kw), tokens)),
        )
        version, champion = _adopt(report, outcome), outcome.champion
        frame = send_time.predict(champion, tokens, people=people)
    except send_time.NotEnoughData as exc:
        report.message = f"baseline only: {exc}"
        frame = pl.DataFrame({"person_id": people.cast(pl.String)}).join(
            send_time.choose_channel(tokens), on="person_id", how="left").with_columns(
            best_local_hour=pl.lit(FALLBACK_HOUR, pl.Int64), confidence=pl.lit(0.0))
    frame = frame.rename({"person_id": "user_id"}).select(
        [pl.col(c).cast(t) for c, t in SEND_SCHEMA.items()])
    report.rows_written = write_table(database_url, "user_send_windows", frame, version)
    return report


RECS_SCHEMA = {"user_id": pl.String, "rank": pl.Int64, "product_id": pl.String,
               "score": pl.Float64, "source": pl.String}
TOP_K = 10


def _rec_groups(database_url: str, everyone: pl.Series) -> pl.DataFrame:
    """person_id, segment (their cluster), device: what cold start and user features use."""
    groups = pl.DataFrame({"person_id": everyone.cast(pl.String)}).join(
        marts.devices(database_url), on="person_id", how="left")
    clusters = (read(database_url, "select user_id as person_id, min(segment) as segment "
                                   "from ml.user_segments where assigned_by = 'cluster' "
                                   "group by 1")
                if table_exists(database_url, "ml.user_segments") else pl.DataFrame())
    if clusters.is_empty():
        return groups.with_columns(segment=pl.lit(None, pl.String))
    return groups.join(clusters, on="person_id", how="left")


def _metrics(m: recs.Metrics) -> dict[str, float]:
    return {"precision_at_10": m.precision_at_k, "recall_at_10": m.recall_at_k,
            "auc": m.auc, "coverage": m.coverage, "evaluated_people": float(m.people)}


def train_recs(database_url: str, seed: int = 7) -> ModelReport:
    """LightFM hybrid (ml.recs) on views, carts and purchases; the holdout is the last 20 %
    of interactions in time, beside popularity. People the model does not know get their
    segment's and device's popular products (cold start); nobody is shown what they bought."""
    report = ModelReport("recs", table="ml.user_recommendations")
    inter, products = marts.interactions(database_url), marts.products(database_url)
    everyone = marts.people(database_url)["user_id"]
    groups = _rec_groups(database_url, everyone)
    tokens = pl.concat([
        groups.select("person_id", feature=pl.lit("device:") + pl.col("device")),
        groups.select("person_id", feature=pl.lit("segment:") + pl.col("segment")),
    ]).drop_nulls()
    config = recs.RecsConfig(seed=seed)
    version = "popularity"
    known = pl.DataFrame(schema={"person_id": pl.String, "rank": pl.Int64,
                                 "product_id": pl.String, "score": pl.Float64})
    try:
        cutoff = recs.cutoff_at_fraction(inter, 0.2)
        fit_on, test = recs.time_split(inter, cutoff)
        model = recs.fit(fit_on, products, config, tokens)
        results = recs.evaluate(model, recs.holdout_matrix(model, test))
        report.metrics = _metrics(results["lightfm"])
        report.baseline = _metrics(results["popularity"])

        def rescore(old: recs.RecsModel) -> float:
            refit = recs.fit(fit_on, products, old.config, tokens)
            return recs.evaluate(refit, recs.holdout_matrix(refit, test))[
                "lightfm"].precision_at_k

        full = recs.fit(inter, products, config, tokens)
        outcome = registry.log_and_gate(
            "recs", full,
            params={k: v for k, v in vars(config).items()} | {"holdout_cutoff": cutoff},
            metrics={**report.metrics,
                     **{f"baseline_{k}": v for k, v in report.baseline.items()},
                     "interactions": float(inter.height), "products": float(products.height)},
            score_key="precision_at_10", snapshot={"interactions": inter, "products": products},
            rescore_champion=rescore,
        )
        version, champion = _adopt(report, outcome), outcome.champion
        known = recs.recommend(champion, everyone.cast(pl.String).to_list(), k=TOP_K)
    except recs.NotEnoughData as exc:
        report.message = f"popularity only: {exc}"
    frame = known.with_columns(source=pl.lit("model"))
    rest = groups.filter(~pl.col("person_id").is_in(known["person_id"].unique().implode()))
    if rest.height and not inter.is_empty():
        try:
            bought = inter.filter(pl.col("kind") == "purchase").select("person_id",
                                                                       "product_id")
            cold = recs.cold_start(recs.popularity_by_group(inter, groups, config),
                                   rest.select("person_id", "segment", "device"), k=TOP_K,
                                   exclude=bought)
            frame = pl.concat([frame, cold.with_columns(source=pl.lit("cold_start"))],
                              how="diagonal_relaxed")
        except recs.NotEnoughData as exc:
            report.message = (report.message + "; " if report.message else "") + str(exc)
    frame = frame.rename({"person_id": "user_id"}).select(
        [pl.col(c).cast(t) for c, t in RECS_SCHEMA.items()])
    report.rows_written = write_table(database_url, "user_recommendations", frame, version)
    _record_recommendations(database_url, frame, products, version)
    return report


def _record_recommendations(database_url: str, lists: pl.DataFrame, products: pl.DataFrame,
                            version: str) -> None:
    """The spec's `user_recommendation` record (10.1): for each person whose list was made,
    `recommended_products` as [{product_id, product_name}], in rank order."""
    names = dict(products.select("product_id", "product_name").iter_rows())
    rows = {}
    for user, product in lists.sort("user_id", "rank").select("user_id", "product_id").iter_rows():
        rows.setdefault(user, []).append({"product_id": product,
                                          "product_name": names.get(product)})
    record = pl.DataFrame({
        "user_id": list(rows),
        "recommended_products": [orjson.dumps(v).decode() for v in rows.values()],
        "generated_at": pl.Series([dt.datetime.now(dt.UTC)] * len(rows),
                                  dtype=pl.Datetime("us", "UTC")),
    }, schema={"user_id": pl.String, "recommended_products": pl.String,
               "generated_at": pl.Datetime("us", "UTC")})
    write_table(database_url, "user_recommendation", record, version)


# In dependency order: segments read the lifecycle scores; recommendations read segments.
TRAINERS: dict[str, Callable[[str, int], ModelReport]] = {
    "lifecycle": train_lifecycle,
    "segments": train_segments,
    "recs": train_recs,
    "send-time": train_send_time,
}


def train(database_url: str, only: list[str] | None = None, seed: int = 7,
          on_step: Callable[[str], None] | None = None) -> list[ModelReport]:
    reports = []
    for name in only or list(TRAINERS):
        if on_step:
            on_step(name)
        reports.append(TRAINERS[name](database_url, seed))
    return reports
