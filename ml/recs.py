"""Product recommendations: a LightFM WARP hybrid beside a popularity baseline.

What it learns
--------------
``fit`` trains LightFM (WARP loss) on implicit feedback. Input frames:

* ``interactions``: ``person_id``, ``product_id``, ``kind`` (``view`` / ``cart`` /
  ``purchase``), ``ts`` (datetime). Each (person, product) pair becomes one positive whose
  sample weight is its strongest signal: ``RecsConfig.weights[kind]`` (view < cart < purchase
  by default) times a recency factor ``0.5 ** (age_days / half_life_days)``, the age measured
  from the newest interaction (``recency_from="shop"``) or from the person's own newest one
  (``"person"``: their current taste). The strongest signal, not the sum, so fifty views of one page
  do not outweigh a purchase and weights stay bounded for the SGD steps.
* ``products``: ``product_id``, ``category``, ``price`` (both may be null). Every catalogue
  product gets a row, bought or not: its representation is the sum of its id embedding and its
  ``category:<c>`` and ``price_band:<b>`` embeddings (``price_bands`` quantile bands of the
  catalogue's prices), so a product nobody bought yet is still scored through its category and
  price band and can be recommended.
* ``user_features`` (optional): ``person_id``, ``feature`` tokens (``device:ios``,
  ``segment:vip``...). ``item_features`` (optional): extra ``product_id``, ``feature`` tokens
  (brand, genre...). Feature rows sum to 1 (LightFM's convention): the tokens share
  ``feature_share`` (0.3) equally, the id column the rest (``*_identity`` off: tokens only).

Scoring is ``user_embedding . item_embedding + biases`` from the trained representations; with
``num_threads=1`` and a fixed ``seed`` the fit, and so every ranking, is deterministic.

What comes next (``RecsConfig.sequence_weight`` > 0, off by default): people who had product
A usually go on to products that others had within ``sequence_window`` steps of A in their own
time-ordered history. ``fit`` counts those neighbours (both directions, each row normalised to
sum 1) and keeps each person's last ``sequence_recent`` products (weights
``sequence_decay ** age rank``); a person's score is then their standardised LightFM score plus
``sequence_weight`` x their neighbour score scaled to a maximum of 1. LightFM factorises who
had what, not in which order, so it misses this signal: on MovieLens 100k with each user's
last 10 ratings held out, it is the difference between 1.75 and more than 2 times popularity
(``bench/recs_movielens.py``).

Recommending
------------
``recommend(model, people, k)`` gives ``person_id, rank, product_id, score`` for the people the
model knows (people it never saw are left out: send them to ``cold_start``). Products excluded
from a person's list: ``RecsConfig.exclude`` = ``"bought"`` (default: what they purchased),
``"interacted"`` (anything they viewed, carted or bought) or ``"none"``.

``cold_start(popularity_by_group(...), people, k)`` serves anonymous and new people: the most
popular products (by summed weighted signal, one vote per person and product) in their
(segment, device) group, filled up from their segment, then their device, then everyone.

Evaluation
----------
``time_split`` cuts interactions at a time (``cutoff_at_fraction`` picks the time leaving the
last X % of interactions out): everything before is training, each person's products after it
are their test set. ``evaluate`` scores the model and the popularity baseline (the same
training data, one ranking for everybody) on the same test set with the same rules:

* every product a person had in training is removed from their ranking (and from their test
  set), so neither model gets credit for re-showing what the person already has;
* only people seen in training with at least one test product count;
* ``precision@k`` (hits / k), ``recall@k`` (hits / test products), ``AUC`` (the chance a test
  product is ranked above a product the person never touched, averaged over people; ties count
  half), ``coverage`` (share of the catalogue appearing in someone's top k).

LightFM's own ``lightfm.evaluation`` functions leave training products in the ranking unless
given ``train_interactions``; the numbers here always remove them (the way a shop recommends).

Errors: ``NotEnoughData`` (named message) when there is nothing to learn from: no interactions,
no purchase and no view (carts alone), fewer than two products in the catalogue, or no person
left for an evaluation; the caller falls back to popularity. ``ValueError`` for a malformed
frame (missing column, unknown kind) or bad parameters.

Plain Python on polars, numpy, scipy.sparse and LightFM: no database, Dagster or MLflow here
(``ml.train`` reads, tracks and writes). Quality on MovieLens 100k: ``bench/recs_movielens.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl
import scipy.sparse as sp
from lightfm import LightFM

KINDS = ("view", "cart", "purchase")
EXCLUDE_MODES = ("bought", "interacted", "none")
_SCORE_BATCH = 2048  # people scored at once: bounds the dense people x products block


class NotEnoughData(Exception):
    """Nothing to learn from: the caller should fall back to popularity."""


def _default_weights() -> dict[str, float]:
    return {"view": 1.0, "cart": 2.0, "purchase": 4.0}


@dataclass(frozen=True)
class RecsConfig:
    weights: dict[str, float] = field(default_factory=_default_weights)
    no_components: int = 32
    epochs: int = 20
    learning_rate: float = 0.05
    learning_schedule: str = "adagrad"  # or "adadelta"
    loss: str = "warp"
    max_sampled: int = 10  # WARP: negatives tried before giving up on a positive
    item_alpha: float = 0.0  # L2 penalties on the feature embeddings
    user_alpha: float = 0.0
    half_life_days: float | None = None  # None: no recency weighting
    # Age measured from the newest interaction of all ("shop": what is in demand now) or of
    # the person ("person": their current taste, whatever their last visit's date).
    recency_from: str = "shop"
    price_bands: int = 4
    item_identity: bool = True  # one id feature per product besides its tokens
    user_identity: bool = True
    # Share of a feature row held by the tokens (the id holds the rest). LightFM's plain
    # normalisation gives an id with 4 tokens 1/5, which slows learning people's own tastes.
    feature_share: float = 0.3
    exclude: str = "bought"
    seed: int = 42
    sequence_weight: float = 0.0  # 0: LightFM alone; see "What comes next" above
    sequence_window: int = 10
    sequence_recent: int = 10
    sequence_decay: float = 0.8

    def __post_init__(self) -> None:
        if set(self.weights) != set(KINDS) or min(self.weights.values()) <= 0:
            raise ValueError(f"weights needs a positive weight for each of {KINDS}")
        if self.no_components < 1 or self.epochs < 1 or self.learning_rate <= 0:
            raise ValueError("components, epochs and learning rate must be positive")
        if self.half_life_days is not None and self.half_life_days <= 0:
            raise ValueError("half_life_days must be positive or None")
        if self.recency_from not in ("shop", "person"):
            raise ValueError("recency_from must be 'shop' or 'person'")
        if self.exclude not in EXCLUDE_MODES:
            raise ValueError(f"exclude must be one of {EXCLUDE_MODES}")
        if not 0 < self.feature_share <= 1:
            raise ValueError("feature_share must be in (0, 1]")
        if self.price_bands < 1:
            raise ValueError("price_bands must be >= 1")
        if self.sequence_weight < 0:
            raise ValueError("sequence_weight must be >= 0")
        if self.sequence_window < 1 or self.sequence_recent < 1:
            raise ValueError("sequence_window and sequence_recent must be >= 1")
        if not 0 < self.sequence_decay <= 1:
            raise ValueError("sequence_decay must be in (0, 1]")


@dataclass
class RecsModel:
    config: RecsConfig
    lightfm: LightFM
    person_ids: list  # row order of the matrices
    product_ids: list  # column order
    train: sp.csr_matrix  # people x products, weighted positives used for the fit
    bought: sp.csr_matrix  # people x products, 1 where purchased in training
    user_features: sp.csr_matrix
    item_features: sp.csr_matrix
    user_index: dict = field(init=False)
    product_index: dict = field(init=False)
    # What comes next (sequence_weight > 0): products x products neighbour shares and
    # people x products recent-history weights; None when off.
    transitions: sp.csr_matrix | None = None
    recent: sp.csr_matrix | None = None

    def __post_init__(self) -> None:
        self.user_index = {p: i for i, p in enumerate(self.person_ids)}
        self.product_index = {p: i for i, p in enumerate(self.product_ids)}

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Dense scores (len(rows) x products) for the people at these matrix rows."""
        ub, ue = self.lightfm.get_user_representations(self.user_features[rows])
        ib, ie = self.lightfm.get_item_representations(self.item_features)
        scores = (ue @ ie.T + ub[:, None] + ib[None, :]).astype(np.float64)
        # getattr: models pickled before the sequence part existed have no such attribute
        transitions = getattr(self, "transitions", None)
        if transitions is None or self.config.sequence_weight <= 0:
            return scores
        # On one scale per person: LightFM's raw scores have no fixed range.
        spread = np.maximum(scores.std(axis=1, keepdims=True), 1e-12)
        scores = (scores - scores.mean(axis=1, keepdims=True)) / spread
        following = (self.recent[rows] @ transitions).toarray()
        following /= np.maximum(following.max(axis=1, keepdims=True), 1e-12)
        return scores + self.config.sequence_weight * following

    def popularity(self) -> np.ndarray:
        """The baseline's score per product: how many people had it in training. Counted, not
        weighted, so the baseline does not move with the model's weights or half-life."""
        return np.asarray((self.train > 0).sum(axis=0)).ravel().astype(np.float64)

    def excluded(self) -> sp.csr_matrix:
        """People x products: what `recommend` never shows (RecsConfig.exclude)."""
        if self.config.exclude == "bought":
            return self.bought
        if self.config.exclude == "interacted":
            return (self.train > 0).astype(np.float32).tocsr()
        return sp.csr_matrix(self.train.shape, dtype=np.float32)


# ---------------------------------------------------------------- input checks and features


def _require(frame: pl.DataFrame, columns: Iterable[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame lacks columns {missing}")


def check_interactions(interactions: pl.DataFrame) -> pl.DataFrame:
    """Validate the frame and drop rows with a null person, product or time."""
    _require(interactions, ("person_id", "product_id", "kind", "ts"), "interactions")
    if interactions.height == 0:
        raise NotEnoughData("no interactions")
    unknown = set(interactions["kind"].drop_nulls().unique().to_list()) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown interaction kinds {sorted(unknown)}; expected {KINDS}")
    clean = interactions.drop_nulls(["person_id", "product_id", "kind", "ts"])
    if clean.height == 0:
        raise NotEnoughData("no interactions")
    if clean.filter(pl.col("kind").is_in(["view", "purchase"])).height == 0:
        raise NotEnoughData("no purchases and no views: carts alone are too thin to learn from")
    return clean


def price_band_tokens(products: pl.DataFrame, bands: int) -> pl.DataFrame:
    """product_id, feature = price_band:<0..bands-1> by quantiles of the catalogue's prices."""
    priced = products.filter(pl.col("price").is_not_null())
    if priced.height == 0:
        return pl.DataFrame(schema={"product_id": products["product_id"].dtype,
                                    "feature": pl.String})
    prices = priced["price"].cast(pl.Float64).to_numpy()
    inner = np.quantile(prices, np.linspace(0, 1, bands + 1)[1:-1])
    band = np.searchsorted(inner, prices, side="right")
    return pl.DataFrame({"product_id": priced["product_id"],
                         "feature": [f"price_band:{b}" for b in band]})


def item_tokens(products: pl.DataFrame, bands: int,
                extra: pl.DataFrame | None = None) -> pl.DataFrame:
    """All (product_id, feature) tokens: category, price band and the caller's extras."""
    parts = [
        products.filter(pl.col("category").is_not_null()).select(
            "product_id", feature=pl.lit("category:") + pl.col("category").cast(pl.String)),
        price_band_tokens(products, bands),
    ]
    if extra is not None:
        _require(extra, ("product_id", "feature"), "item_features")
        parts.append(extra.select("product_id", pl.col("feature").cast(pl.String)))
    parts = [p.with_columns(pl.col("product_id").cast(products["product_id"].dtype))
             for p in parts]
    return pl.concat(parts).drop_nulls().unique(maintain_order=True)


def _feature_matrix(ids: list, tokens: pl.DataFrame | None, id_column: str,
                    identity: bool, share: float,
                    untrained: np.ndarray | None = None) -> sp.csr_matrix:
    """Rows = ids; columns = [one id column each | tokens]. Each row sums to 1: the tokens
    split `share` equally and the id column holds the rest (all of it without tokens).
    `untrained` rows (no interaction to learn their id from) with tokens use tokens only:
    an id embedding that never got a gradient is random noise."""
    index = {v: i for i, v in enumerate(ids)}
    rows: list[int] = []
    cols: list[int] = []
    offset = len(ids) if identity else 0
    if identity:
        rows.extend(range(len(ids)))
        cols.extend(range(len(ids)))
    n_tokens = 0
    if tokens is not None and tokens.height:
        tokens = tokens.filter(pl.col(id_column).is_in(ids))
        vocabulary = sorted(set(tokens["feature"].to_list()))
        token_index = {t: j for j, t in enumerate(vocabulary)}
        n_tokens = len(vocabulary)
        for who, token in tokens.select(id_column, "feature").iter_rows():
            rows.append(index[who])
            cols.append(offset + token_index[token])
    if not identity and n_tokens == 0:
        raise ValueError("features off and no tokens: nothing to represent people or products")
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                           shape=(len(ids), offset + n_tokens))
    matrix.sum_duplicates()
    coo = matrix.tocoo()
    is_token = coo.col >= offset
    n_row_tokens = np.bincount(coo.row[is_token], minlength=len(ids))
    with_tokens = n_row_tokens > 0
    token_share = np.where(with_tokens, share if identity else 1.0, 0.0)
    if untrained is not None:
        token_share = np.where(with_tokens & untrained, 1.0, token_share)
    weights = np.where(is_token, token_share[coo.row] / np.maximum(n_row_tokens[coo.row], 1),
                       1.0 - token_share[coo.row])
    keep = weights > 0
    return sp.csr_matrix((weights[keep].astype(np.float32), (coo.row[keep], coo.col[keep])),
                         shape=matrix.shape)


def _weighted_pairs(interactions: pl.DataFrame, config: RecsConfig) -> pl.DataFrame:
    """One row per (person, product): the strongest recency-weighted signal."""
    weight = pl.col("kind").replace_strict(config.weights, return_dtype=pl.Float64)
    if config.half_life_days is not None:
        newest = (pl.col("ts").max().over("person_id") if config.recency_from == "person"
                  else pl.col("ts").max())
        age_days = (newest - pl.col("ts")).dt.total_seconds() / 86400.0
        # floored so a very old signal stays a (faint) positive instead of underflowing to 0
        weight = (weight * (0.5 ** (age_days / config.half_life_days))).clip(lower_bound=1e-4)
    return (interactions.with_columns(weight=weight)
            .group_by("person_id", "product_id")
            .agg(pl.col("weight").max(), bought=(pl.col("kind") == "purchase").any()))


def _sequence(interactions: pl.DataFrame, model: RecsModel) -> tuple[sp.csr_matrix,
                                                                     sp.csr_matrix]:
    """(transitions, recent) of the "what comes next" part: see RecsConfig.sequence_*.

    Each person's products in the order they first had them (ties by product id); products
    within `sequence_window` steps are neighbours, both ways. Recent: the person's last
    `sequence_recent` distinct products by their latest time, newest weighing 1."""
    config = model.config
    firsts = (interactions.group_by("person_id", "product_id")
              .agg(first=pl.col("ts").min(), last=pl.col("ts").max())
              .filter(pl.col("person_id").is_in(model.person_ids)))
    ordered = firsts.sort("person_id", "first", "product_id")
    people = ordered["person_id"].to_numpy()
    items = np.array([model.product_index[p] for p in ordered["product_id"].to_list()],
                     dtype=np.int64)
    n = len(model.product_ids)
    sources, targets = [], []
    for step in range(1, config.sequence_window + 1):
        same = people[step:] == people[:-step]
        sources += [items[:-step][same], items[step:][same]]
        targets += [items[step:][same], items[:-step][same]]
    src = np.concatenate(sources) if sources else np.empty(0, np.int64)
    dst = np.concatenate(targets) if targets else np.empty(0, np.int64)
    counts = sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    counts.sum_duplicates()
    totals = np.asarray(counts.sum(axis=1)).ravel()
    transitions = sp.diags(1.0 / np.maximum(totals, 1.0)) @ counts
    newest = (firsts.sort("person_id", "last", "product_id", descending=[False, True, True])
              .with_columns(age=pl.int_range(pl.len()).over("person_id"))
              .filter(pl.col("age") < config.sequence_recent))
    recent = sp.csr_matrix(
        (config.sequence_decay ** newest["age"].to_numpy().astype(np.float64),
         ([model.user_index[p] for p in newest["person_id"].to_list()],
          [model.product_index[p] for p in newest["product_id"].to_list()])),
        shape=(len(model.person_ids), n))
    return sp.csr_matrix(transitions), recent


# ---------------------------------------------------------------------------------- fit


def fit(interactions: pl.DataFrame, products: pl.DataFrame, config: RecsConfig | None = None,
        user_features: pl.DataFrame | None = None,
        item_features: pl.DataFrame | None = None) -> RecsModel:
    """Train the hybrid on every interaction given (filter by time before calling)."""
    config = config or RecsConfig()
    _require(products, ("product_id", "category", "price"), "products")
    catalogue = products.unique("product_id", maintain_order=True)
    if catalogue.height < 2:
        raise NotEnoughData(f"one product in the catalogue ({catalogue.height}): "
                            "nothing to rank, use popularity")
    clean = check_interactions(interactions)
    clean = clean.filter(pl.col("product_id").is_in(catalogue["product_id"].implode()))
    if clean.height == 0:
        raise NotEnoughData("no interactions with a product of the catalogue")
    check_interactions(clean)  # the catalogue filter may leave carts only

    pairs = _weighted_pairs(clean, config).sort("person_id", "product_id")
    person_ids = pairs["person_id"].unique(maintain_order=True).to_list()
    product_ids = catalogue["product_id"].to_list()
    model = RecsModel(config=config, lightfm=LightFM(), person_ids=person_ids,
                      product_ids=product_ids, train=sp.csr_matrix((1, 1)),
                      bought=sp.csr_matrix((1, 1)), user_features=sp.csr_matrix((1, 1)),
                      item_features=sp.csr_matrix((1, 1)))
    shape = (len(person_ids), len(product_ids))
    rows = np.array([model.user_index[p] for p in pairs["person_id"].to_list()])
    cols = np.array([model.product_index[p] for p in pairs["product_id"].to_list()])
    weights = pairs["weight"].to_numpy().astype(np.float32)
    model.train = sp.csr_matrix((weights, (rows, cols)), shape=shape)
    bought = pairs["bought"].to_numpy()
    model.bought = sp.csr_matrix((np.ones(int(bought.sum()), dtype=np.float32),
                                  (rows[bought], cols[bought])), shape=shape)

    if user_features is not None:
        _require(user_features, ("person_id", "feature"), "user_features")
        user_features = user_features.select("person_id", pl.col("feature").cast(pl.String))
    model.user_features = _feature_matrix(person_ids, user_features, "person_id",
                                          config.user_identity, config.feature_share)
    model.item_features = _feature_matrix(
        product_ids, item_tokens(catalogue, config.price_bands, item_features), "product_id",
        config.item_identity, config.feature_share,
        untrained=np.asarray(model.train.sum(axis=0)).ravel() == 0)

    model.lightfm = LightFM(no_components=config.no_components, loss=config.loss,
                            learning_rate=config.learning_rate,
                            learning_schedule=config.learning_schedule,
                            max_sampled=config.max_sampled, item_alpha=config.item_alpha,
                            user_alpha=config.user_alpha, random_state=config.seed)
    coo = model.train.tocoo()
    interactions_01 = sp.coo_matrix((np.ones_like(coo.data), (coo.row, coo.col)), shape=shape)
    model.lightfm.fit(interactions_01, user_features=model.user_features,
                      item_features=model.item_features,
                      # LightFM's k-OS loss takes no sample weights: signals count alike there
                      sample_weight=None if config.loss == "warp-kos" else coo,
                      epochs=config.epochs, num_threads=1)  # one thread: reproducible
    if config.sequence_weight > 0:
        model.transitions, model.recent = _sequence(clean, model)
    return model


# ------------------------------------------------------------------------------ ranking


def _top_k(scores: np.ndarray, excluded: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the k best columns (ties: lower column first) that are not excluded."""
    scores = scores.copy()
    ex = excluded.tocoo()
    scores[ex.row, ex.col] = -np.inf
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def recommend(model: RecsModel, people: Iterable, k: int = 10) -> pl.DataFrame:
    """person_id, rank (1..k), product_id, score for the known people among `people`."""
    if k < 1:
        raise ValueError("k must be >= 1")
    known = [p for p in dict.fromkeys(people) if p in model.user_index]
    rows = np.array([model.user_index[p] for p in known], dtype=np.int64)
    excluded = model.excluded()
    out_people, out_rank, out_products, out_scores = [], [], [], []
    for start in range(0, len(rows), _SCORE_BATCH):
        batch = rows[start:start + _SCORE_BATCH]
        order, top = _top_k(model.scores(batch), excluded[batch], k)
        for i, person in enumerate(known[start:start + _SCORE_BATCH]):
            keep = np.isfinite(top[i])  # fewer than k products left for this person
            n = int(keep.sum())
            out_people.extend([person] * n)
            out_rank.extend(range(1, n + 1))
            out_products.extend(model.product_ids[j] for j in order[i][keep])
            out_scores.extend(top[i][keep].tolist())
    return pl.DataFrame({
        "person_id": pl.Series(out_people, dtype=_dtype(model.person_ids)),
        "rank": pl.Series(out_rank, dtype=pl.Int32),
        "product_id": pl.Series(out_products, dtype=_dtype(model.product_ids)),
        "score": pl.Series(out_scores, dtype=pl.Float64),
    })


def _dtype(values: list) -> pl.DataType:
    return pl.Series(values[:1]).dtype if values else pl.String


# ---------------------------------------------------------------------------- cold start


def popularity_by_group(interactions: pl.DataFrame, people: pl.DataFrame,
                        config: RecsConfig | None = None) -> pl.DataFrame:
    """segment, device, product_id, score: popularity per group and at every coarser level.

    `people` has person_id, segment, device (either may be null). Rows with a null segment
    (device) are the popularity over all segments (devices); both null: everybody."""
    config = config or RecsConfig()
    _require(people, ("person_id", "segment", "device"), "people")
    pairs = _weighted_pairs(check_interactions(interactions), config).join(
        people.select("person_id", "segment", "device").unique("person_id"),
        on="person_id", how="left")
    levels = []
    for keys in (("segment", "device"), ("segment",), ("device",), ()):
        summed = pairs.group_by(*keys, "product_id").agg(score=pl.col("weight").sum())
        if keys:
            summed = summed.filter(pl.all_horizontal(pl.col(c).is_not_null() for c in keys))
        for column in ("segment", "device"):
            if column not in keys:
                summed = summed.with_columns(pl.lit(None, people[column].dtype).alias(column))
        levels.append(summed.select("segment", "device", "product_id", "score"))
    return pl.concat(levels).sort("segment", "device", "score", "product_id",
                                  descending=[False, False, True, False], nulls_last=True)


def cold_start(popularity: pl.DataFrame, people: pl.DataFrame, k: int = 10,
               exclude: pl.DataFrame | None = None) -> pl.DataFrame:
    """person_id, rank, product_id, score for anonymous / new people from group popularity.

    Each person gets their (segment, device) group's most popular products, filled up from
    their segment's, then their device's, then everybody's. `exclude` (person_id, product_id)
    removes products, e.g. what an anonymous visitor already bought."""
    _require(popularity, ("segment", "device", "product_id", "score"), "popularity")
    _require(people, ("person_id", "segment", "device"), "people")
    if popularity.height == 0:
        raise NotEnoughData("no popularity to serve cold-start people from")
    ranked: dict[tuple, list[tuple]] = {}
    for seg, dev, product, score in popularity.sort(
            "score", "product_id", descending=[True, False]).iter_rows():
        ranked.setdefault((seg, dev), []).append((product, score))
    banned: dict = {}
    if exclude is not None:
        for person, product in exclude.select("person_id", "product_id").iter_rows():
            banned.setdefault(person, set()).add(product)
    out: list[tuple] = []
    for person, seg, dev in people.select("person_id", "segment", "device").iter_rows():
        chosen: list[tuple] = []
        seen = set(banned.get(person, ()))
        for level in ((seg, dev), (seg, None), (None, dev), (None, None)):
            for product, score in ranked.get(level, ()):
                if len(chosen) == k:
                    break
                if product not in seen:
                    seen.add(product)
                    chosen.append((product, score))
        out.extend((person, r, p, s) for r, (p, s) in enumerate(chosen, start=1))
    return pl.DataFrame(out, schema={"person_id": people["person_id"].dtype, "rank": pl.Int32,
                                     "product_id": popularity["product_id"].dtype,
                                     "score": pl.Float64}, orient="row")


# ---------------------------------------------------------------------------- evaluation


def cutoff_at_fraction(interactions: pl.DataFrame, test_fraction: float) -> datetime:
    """The time that leaves the last `test_fraction` of the interactions after it."""
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be between 0 and 1")
    times = check_interactions(interactions)["ts"].sort()
    first_test = min(int(np.ceil(times.len() * (1 - test_fraction))), times.len() - 1)
    return times[first_test]  # ties at the cut-off all go to the test side


def time_split(interactions: pl.DataFrame, cutoff: datetime
               ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train: ts < cutoff, test: ts >= cutoff)."""
    clean = check_interactions(interactions)
    return clean.filter(pl.col("ts") < cutoff), clean.filter(pl.col("ts") >= cutoff)


def holdout_matrix(model: RecsModel, test: pl.DataFrame,
                kinds: Iterable[str] = KINDS) -> sp.csr_matrix:
    """People x products, 1 for each test pair of known people and products (given kinds),
    minus the pairs the person already had in training."""
    test = test.filter(pl.col("kind").is_in(list(kinds))
                       & pl.col("person_id").is_in(list(model.user_index))
                       & pl.col("product_id").is_in(list(model.product_index)))
    pairs = test.select("person_id", "product_id").unique()
    rows = [model.user_index[p] for p in pairs["person_id"].to_list()]
    cols = [model.product_index[p] for p in pairs["product_id"].to_list()]
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                           shape=model.train.shape)
    matrix = matrix - matrix.multiply(model.train > 0)
    matrix.eliminate_zeros()
    return sp.csr_matrix(matrix)


@dataclass(frozen=True)
class Metrics:
    precision_at_k: float
    recall_at_k: float
    auc: float
    coverage: float
    people: int


def precision_recall_at_k(top: np.ndarray, relevant: sp.csr_matrix, k: int
                          ) -> tuple[float, float]:
    """Mean precision@k (hits / k) and recall@k (hits / relevant) over rows of `top`."""
    hits = np.array([np.isin(top[i, :k], relevant[i].indices).sum()
                     for i in range(top.shape[0])], dtype=np.float64)
    n_relevant = np.diff(relevant.indptr).astype(np.float64)
    return float(np.mean(hits / k)), float(np.mean(hits / n_relevant))


def catalogue_coverage(top: np.ndarray, n_products: int) -> float:
    """Share of the catalogue that appears in at least one list."""
    return len(np.unique(top)) / n_products


def auc_per_person(scores: np.ndarray, relevant: sp.csr_matrix,
                   excluded: sp.csr_matrix) -> np.ndarray:
    """Per row: P(score of a relevant column > score of an other, non-excluded column);
    ties count half (Mann-Whitney). Excluded columns take part in neither side."""
    out = np.empty(scores.shape[0])
    for i in range(scores.shape[0]):
        keep = np.ones(scores.shape[1], dtype=bool)
        keep[excluded[i].indices] = False
        positive = np.zeros(scores.shape[1], dtype=bool)
        positive[relevant[i].indices] = True
        s, pos = scores[i, keep], positive[keep]
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            out[i] = np.nan
            continue
        order = np.argsort(s, kind="stable")
        ranks = np.empty(len(s))
        sorted_s = s[order]
        # average ranks over ties
        _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
        average = first + (counts - 1) / 2.0 + 1.0
        ranks[order] = np.repeat(average, counts)
        out[i] = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return out


def ranking_metrics(score_rows: Callable[[np.ndarray], np.ndarray], train: sp.csr_matrix,
                    relevant: sp.csr_matrix, k: int = 10) -> Metrics:
    """Metrics of a scorer over the people with at least one relevant product; training
    products (any non-zero of `train`) are removed from each ranking."""
    rows = np.flatnonzero(np.diff(relevant.indptr) > 0)
    if len(rows) == 0:
        raise NotEnoughData("no person with a test product seen in training")
    seen = (train > 0).astype(np.float32).tocsr()
    precision, recall, aucs, tops = [], [], [], []
    for start in range(0, len(rows), _SCORE_BATCH):
        batch = rows[start:start + _SCORE_BATCH]
        scores = score_rows(batch)
        top, _ = _top_k(scores, seen[batch], k)
        p, r = precision_recall_at_k(top, relevant[batch], k)
        precision.append(p * len(batch))
        recall.append(r * len(batch))
        aucs.append(auc_per_person(scores, relevant[batch], seen[batch]))
        tops.append(top)
    return Metrics(precision_at_k=sum(precision) / len(rows), recall_at_k=sum(recall) / len(rows),
                   auc=float(np.nanmean(np.concatenate(aucs))),
                   coverage=catalogue_coverage(np.concatenate(tops), train.shape[1]),
                   people=len(rows))


def evaluate(model: RecsModel, relevant: sp.csr_matrix, k: int = 10) -> dict[str, Metrics]:
    """{"lightfm": ..., "popularity": ...} on the same test matrix (see `holdout_matrix`)."""
    popularity = model.popularity()
    return {
        "lightfm": ranking_metrics(model.scores, model.train, relevant, k),
        "popularity": ranking_metrics(
            lambda rows: np.tile(popularity, (len(rows), 1)), model.train, relevant, k),
    }


def metrics_frame(results: dict[str, Metrics]) -> pl.DataFrame:
    """One row per model: the figures to log or print."""
    return pl.DataFrame([{"model": name, **vars(m)} for name, m in results.items()])
