"""Who each shopper is (spec 5.1): documented rule segments plus a learned clustering.

Rule segments are what a marketer asks for by name; a person may be in several. Their
thresholds live in `SegmentRules`, so a shop changes them without touching code paths:

- new_visitor: first seen within `new_days` days
- active_buyer: at least one order, the last within `active_days` days
- mobile_app_user: any activity from the iOS or Android app
- cart_abandoner: cart or checkout activity after their last order, within `abandon_days`
- lapsing_buyer: a repeat buyer whose chance of still being active (lifecycle model) is
  below `lapsing_p_active`; without the model, last order `lapsing_days` days ago or more
- dormant: no visit for `dormant_days` days
- high_value: top `high_value_share` of buyers by expected 12-month value (lifecycle
  model), else by spend so far

The clustering (k-means on standardised behaviour features) picks its number of clusters by
the best silhouette score over `k_range` (sampled, so it stays fast on big shops), and names
each cluster in words from how its average differs from the whole shop's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

RULE_SEGMENTS = ("new_visitor", "active_buyer", "mobile_app_user", "cart_abandoner",
                 "lapsing_buyer", "dormant", "high_value")
CLUSTER_FEATURES = ("orders", "monetary", "sessions", "share_mobile", "push_open_rate",
                    "days_since_last_visit", "weekend_share")


@dataclass(frozen=True)
class SegmentRules:
    new_days: int = 7
    active_days: int = 30
    abandon_days: int = 14
    lapsing_days: int = 90
    lapsing_p_active: float = 0.5
    dormant_days: int = 90
    high_value_share: float = 0.2


@dataclass(frozen=True)
class ClusterConfig:
    k_range: tuple[int, int] = (2, 6)
    sample: int = 5_000
    seed: int = 7


def rule_segments(people: pl.DataFrame, rules: SegmentRules = SegmentRules()) -> pl.DataFrame:
    """(user_id, segment, assigned_by='rule') for every rule a person meets.

    `people` has one row per person: user_id, days_since_first_seen, orders,
    days_since_last_order, days_since_last_visit, share_mobile, monetary,
    days_since_last_cart (null if none after the last order), and optionally p_active and
    expected_value_12m from the lifecycle model."""
    has_lifecycle = "p_active" in people.columns and people["p_active"].null_count() < people.height
    buyers = people.filter(pl.col("orders") > 0)
    value_col = "expected_value_12m" if has_lifecycle else "monetary"
    cut = (buyers[value_col].quantile(1 - rules.high_value_share)
           if buyers.height else None)
    lapsing = (
        (pl.col("orders") >= 2) & (pl.col("p_active") < rules.lapsing_p_active)
        if has_lifecycle
        else (pl.col("orders") >= 2) & (pl.col("days_since_last_order") >= rules.lapsing_days)
    )
    conditions = {
        "new_visitor": pl.col("days_since_first_seen") <= rules.new_days,
        "active_buyer": (pl.col("orders") > 0)
        & (pl.col("days_since_last_order") <= rules.active_days),
        "mobile_app_user": pl.col("share_mobile") > 0,
        "cart_abandoner": pl.col("days_since_last_cart") <= rules.abandon_days,
        "lapsing_buyer": lapsing,
        "dormant": pl.col("days_since_last_visit") > rules.dormant_days,
        "high_value": (pl.col("orders") > 0) & (pl.col(value_col) >= cut)
        if cut is not None else pl.lit(False),
    }
    flags = people.select("user_id", *[c.fill_null(False).alias(n) for n, c in conditions.items()])
    return (
        flags.unpivot(index="user_id", variable_name="segment", value_name="member")
        .filter(pl.col("member"))
        .select("user_id", "segment", assigned_by=pl.lit("rule"))
        .sort("user_id", "segment")
    )


@dataclass
class Clustering:
    """A fitted clustering: scaler and k-means, the names of its clusters, how k was chosen."""

    scaler: StandardScaler
    kmeans: KMeans
    names: list[str]
    silhouettes: dict[int, float]

    @property
    def k(self) -> int:
        return self.kmeans.n_clusters


def _matrix(people: pl.DataFrame) -> np.ndarray:
    cols = []
    for name in CLUSTER_FEATURES:
        col = people[name].cast(pl.Float64).fill_null(0.0).to_numpy()
        if name in ("orders", "monetary", "sessions"):
            col = np.log1p(np.clip(col, 0, None))  # heavy tails: a few big buyers
        if name == "days_since_last_visit":
            col = np.clip(col, 0, 365)
        cols.append(col)
    return np.column_stack(cols)


def fit_clusters(people: pl.DataFrame, config: ClusterConfig = ClusterConfig()) -> Clustering:
    """K-means with k chosen by the best silhouette over `config.k_range`."""
    x = _matrix(people)
    distinct = np.unique(x, axis=0).shape[0]
    if distinct < 2:
        raise ValueError(f"cannot cluster {people.height} people with {distinct} distinct "
                         "behaviour profile(s)")
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    rng = np.random.default_rng(config.seed)
    sample = z if len(z) <= config.sample else z[rng.choice(len(z), config.sample, False)]
    lo, hi = config.k_range
    scores: dict[int, float] = {}
    models: dict[int, KMeans] = {}
    for k in range(lo, min(hi, distinct - 1, len(sample) - 1) + 1):
        km = KMeans(n_clusters=k, n_init=4, random_state=config.seed).fit(z)
        labels = km.predict(sample)
        if len(set(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(sample, labels, random_state=config.seed))
        models[k] = km
    if not scores:  # two distinct profiles only: two clusters
        models[2] = KMeans(n_clusters=2, n_init=4, random_state=config.seed).fit(z)
        scores[2] = 0.0
    best = max(scores, key=lambda k: scores[k])
    km = models[best]
    return Clustering(scaler, km, _names(km, scaler), scores)


def _names(km: KMeans, scaler: StandardScaler) -> list[str]:
    """Words for each cluster from its centre in standard units (0 = the shop's average)."""
    names = []
    for centre in km.cluster_centers_:
        c = dict(zip(CLUSTER_FEATURES, centre, strict=True))
        words = []
        words.append("recent" if c["days_since_last_visit"] < -0.5
                     else "lapsed" if c["days_since_last_visit"] > 0.5 else "")
        words.append("weekend" if c["weekend_share"] > 0.5 else "")
        words.append("mobile" if c["share_mobile"] > 0.5 else
                     "web" if c["share_mobile"] < -0.5 else "")
        words.append("browsers" if c["sessions"] > 0.5 else "visitors")
        buying = ("frequent buyers" if c["orders"] > 1 else "buy" if c["orders"] > 0
                  else "rarely buy")
        push = "open pushes" if c["push_open_rate"] > 0.5 else ""
        head = " ".join(w for w in words if w)
        tail = ", ".join(w for w in (buying, push) if w)
        names.append(f"{head}, {tail}")
    # Two clusters may read alike: number the repeats so every name is unique.
    seen: dict[str, int] = {}
    unique = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return unique


def assign_clusters(model: Clustering, people: pl.DataFrame) -> pl.DataFrame:
    """(user_id, segment, assigned_by='cluster') for every person."""
    labels = model.kmeans.predict(model.scaler.transform(_matrix(people)))
    return pl.DataFrame({
        "user_id": people["user_id"],
        "segment": [model.names[i] for i in labels],
        "assigned_by": "cluster",
    })
