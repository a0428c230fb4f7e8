"""ml/recs.py on small synthetic shops built here (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from ml import recs

START = datetime(2026, 1, 1, tzinfo=UTC)
CUTOFF = START + timedelta(days=60)
FAST = recs.RecsConfig(epochs=15, no_components=16)


def two_taste_shop(seed: int = 0, people: int = 40, per_group: int = 30
                   ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Group a only touches category-a products, group b only category-b ones; within a
    group some products are much more liked than others. 8 products before the cut-off,
    3 after, per person."""
    rng = np.random.default_rng(seed)
    products = pl.DataFrame({
        "product_id": [f"{g}{i}" for g in "ab" for i in range(per_group)],
        "category": [g for g in "ab" for _ in range(per_group)],
        "price": [float(5 + i) for _ in "ab" for i in range(per_group)],
    })
    taste = 1.0 / np.arange(1, per_group + 1)  # Zipf-like popularity inside a group
    rows = []
    for g in "ab":
        for n in range(people):
            chosen = rng.choice(per_group, size=11, replace=False, p=taste / taste.sum())
            for j, item in enumerate(chosen):
                day = rng.uniform(0, 59) if j < 8 else rng.uniform(61, 90)
                kind = "purchase" if j % 3 == 0 else "view"
                rows.append((f"{g}-{n}", f"{g}{item}", kind, START + timedelta(days=day)))
    # the b group is smaller in number of events in the a products' favour, so that global
    # popularity is dominated by group a's favourites
    interactions = pl.DataFrame(rows, schema=["person_id", "product_id", "kind", "ts"],
                                orient="row")
    extra = pl.DataFrame(
        [(f"a-{n}", "a0", "view", START + timedelta(days=1, hours=n)) for n in range(people)],
        schema=interactions.schema, orient="row")
    return pl.concat([interactions, extra]), products


def test_model_beats_popularity_on_two_taste_groups() -> None:
    interactions, products = two_taste_shop()
    train, test = recs.time_split(interactions, CUTOFF)
    model = recs.fit(train, products, FAST)
    results = recs.evaluate(model, recs.holdout_matrix(model, test), k=5)
    m, p = results["lightfm"], results["popularity"]
    assert m.people == 80
    assert m.precision_at_k > 1.3 * p.precision_at_k, (m, p)
    assert m.auc > p.auc
    assert m.coverage > p.coverage  # popularity shows everyone the same few products
    frame = recs.metrics_frame(results)
    assert frame["model"].to_list() == ["lightfm", "popularity"]


def test_recommendations_exclude_bought_and_stay_in_group() -> None:
    interactions, products = two_taste_shop()
    model = recs.fit(interactions, products, FAST)
    out = recs.recommend(model, ["a-0", "b-0", "a-1", "nobody"], k=5)
    assert out.columns == ["person_id", "rank", "product_id", "score"]
    assert sorted(out["person_id"].unique().to_list()) == ["a-0", "a-1", "b-0"]  # nobody: cold
    assert out.filter(pl.col("person_id") == "a-0")["rank"].to_list() == [1, 2, 3, 4, 5]
    bought = interactions.filter(pl.col("kind") == "purchase").select("person_id", "product_id")
    assert out.join(bought, on=["person_id", "product_id"]).height == 0
    # the lists follow the person's taste group
    assert (out["product_id"].str.slice(0, 1) == out["person_id"].str.slice(0, 1)).mean() >= 0.8
    scores = out.filter(pl.col("person_id") == "a-0")["score"].to_list()
    assert scores == sorted(scores, reverse=True)


def test_exclude_modes() -> None:
    interactions, products = two_taste_shop()
    everything = interactions.select("person_id", "product_id").unique()
    viewed_only = everything.join(
        interactions.filter(pl.col("kind") == "purchase").select("person_id", "product_id"),
        on=["person_id", "product_id"], how="anti")
    interacted = recs.fit(interactions, products, recs.RecsConfig(
        epochs=15, no_components=16, exclude="interacted"))
    out = recs.recommend(interacted, interacted.person_ids, k=10)
    assert out.join(everything, on=["person_id", "product_id"]).height == 0
    # default ("bought"): viewed products may come back, a person's favourites among them
    bought_only = recs.fit(interactions, products, FAST)
    out = recs.recommend(bought_only, bought_only.person_ids, k=10)
    assert out.join(viewed_only, on=["person_id", "product_id"]).height > 0
    nothing = recs.fit(interactions, products, recs.RecsConfig(
        epochs=15, no_components=16, exclude="none"))
    assert recs.recommend(nothing, ["a-0"], k=60).height == 60


def test_deterministic_with_seed() -> None:
    interactions, products = two_taste_shop()
    first = recs.recommend(recs.fit(interactions, products, FAST), ["a-0", "b-3"], k=10)
    again = recs.recommend(recs.fit(interactions, products, FAST), ["a-0", "b-3"], k=10)
    assert first.equals(again)
    other = recs.fit(interactions, products, recs.RecsConfig(epochs=15, no_components=16,
                                                             seed=7))
    assert not recs.recommend(other, ["a-0", "b-3"], k=10)["score"].equals(first["score"])


def test_never_bought_product_is_recommendable_through_its_category() -> None:
    interactions, products = two_taste_shop()
    new = pl.DataFrame({"product_id": ["a-new"], "category": ["a"], "price": [10.0]})
    model = recs.fit(interactions, pl.concat([products, new]), FAST)
    column = model.product_index["a-new"]
    scores = model.scores(np.arange(len(model.person_ids)))[:, column]
    group_a = np.array([p.startswith("a") for p in model.person_ids])
    assert scores[group_a].mean() > scores[~group_a].mean()
    everything = recs.recommend(model, ["a-0"], k=len(model.product_ids))
    assert "a-new" in everything["product_id"].to_list()


def test_user_features_and_recency_are_used() -> None:
    interactions, products = two_taste_shop()
    tokens = pl.DataFrame({"person_id": ["a-0", "b-0"], "feature": ["device:ios", "device:web"]})
    model = recs.fit(interactions, products, recs.RecsConfig(
        epochs=5, no_components=8, half_life_days=10.0), user_features=tokens)
    people = len(model.person_ids)
    assert model.user_features.shape == (people, people + 2)
    row = model.user_features[model.user_index["a-0"]].toarray().ravel()
    assert row.sum() == pytest.approx(1.0) and np.count_nonzero(row) == 2
    # recency: the same kind counts less when older (strongest signal per pair, decayed)
    old = interactions.filter(pl.col("ts") < START + timedelta(days=5)).row(0, named=True)
    new = interactions.filter(pl.col("ts") > START + timedelta(days=80)).row(0, named=True)
    w = model.train
    old_w = w[model.user_index[old["person_id"]], model.product_index[old["product_id"]]]
    new_w = w[model.user_index[new["person_id"]], model.product_index[new["product_id"]]]
    base = recs.RecsConfig().weights
    assert old_w / base[old["kind"]] < new_w / base[new["kind"]]


def test_cold_start_uses_segment_and_device_popularity() -> None:
    ts = START
    interactions = pl.DataFrame({
        "person_id": ["p1", "p2", "p2", "p3", "p4", "p4", "p5"],
        "product_id": ["phone", "phone", "case", "dress", "dress", "shoes", "socks"],
        "kind": ["purchase", "purchase", "view", "purchase", "view", "purchase", "purchase"],
        "ts": [ts] * 7,
    })
    people = pl.DataFrame({
        "person_id": ["p1", "p2", "p3", "p4", "p5"],
        "segment": ["tech", "tech", "fashion", "fashion", None],
        "device": ["ios", "ios", "android", "ios", "web"],
    })
    popularity = recs.popularity_by_group(interactions, people)
    top = popularity.filter((pl.col("segment") == "tech") & (pl.col("device") == "ios"))
    assert top["product_id"].to_list() == ["phone", "case"]
    assert top["score"].to_list() == [8.0, 1.0]  # two purchases x 4, one view x 1
    everyone = popularity.filter(pl.col("segment").is_null() & pl.col("device").is_null())
    assert everyone["product_id"][0] == "phone"

    newcomers = pl.DataFrame({
        "person_id": ["n1", "n2", "n3", "anon"],
        "segment": ["fashion", "fashion", None, None],
        "device": ["android", "web", "ios", None],
    })
    out = recs.cold_start(popularity, newcomers, k=3,
                          exclude=pl.DataFrame({"person_id": ["n2"], "product_id": ["dress"]}))
    lists = {p: out.filter(pl.col("person_id") == p)["product_id"].to_list()
             for p in ("n1", "n2", "n3", "anon")}
    # (fashion, android) first, then fashion, then everybody
    assert lists["n1"] == ["dress", "shoes", "phone"]
    # no (fashion, web) group: fashion (dress excluded), then web's socks, then everybody
    assert lists["n2"] == ["shoes", "socks", "phone"]
    # ios: phone 8, shoes 4, case and dress 1 each (ties by product id)
    assert lists["n3"] == ["phone", "shoes", "case"]
    assert lists["anon"] == ["phone", "dress", "shoes"]
    assert out.filter(pl.col("person_id") == "n1")["rank"].to_list() == [1, 2, 3]


@pytest.mark.parametrize("frame, products, message", [
    ("empty", 3, "no interactions"),
    ("carts", 3, "no purchases and no views"),
    ("ok", 1, "one product in the catalogue"),
])
def test_not_enough_data(frame: str, products: int, message: str) -> None:
    kinds = {"empty": [], "carts": ["cart", "cart"], "ok": ["purchase", "view"]}[frame]
    interactions = pl.DataFrame({
        "person_id": ["p1", "p2"][:len(kinds)], "product_id": ["x"] * len(kinds),
        "kind": kinds, "ts": [START] * len(kinds)},
        schema={"person_id": pl.String, "product_id": pl.String, "kind": pl.String,
                "ts": pl.Datetime("us", "UTC")})
    catalogue = pl.DataFrame({"product_id": ["x", "y", "z"][:products],
                              "category": ["c"] * products, "price": [1.0] * products})
    with pytest.raises(recs.NotEnoughData, match=message):
        recs.fit(interactions, catalogue, FAST)


def test_unknown_kind_and_bad_config_are_value_errors() -> None:
    interactions = pl.DataFrame({"person_id": ["p"], "product_id": ["x"], "kind": ["click"],
                                 "ts": [START]})
    with pytest.raises(ValueError, match="unknown interaction kinds"):
        recs.check_interactions(interactions)
    with pytest.raises(ValueError, match="exclude"):
        recs.RecsConfig(exclude="everything")
    with pytest.raises(ValueError, match="weights"):
        recs.RecsConfig(weights={"view": 1.0, "purchase": 2.0})


def test_precision_recall_coverage_by_hand() -> None:
    top = np.array([[0, 1, 2], [3, 4, 0]])
    relevant = sp.csr_matrix(np.array([[1, 0, 1, 0, 0, 1],  # 2 hits of 3 relevant
                                       [0, 0, 0, 0, 0, 1]]))  # 0 hits of 1
    precision, recall = recs.precision_recall_at_k(top, relevant, k=3)
    assert precision == pytest.approx((2 / 3 + 0) / 2)
    assert recall == pytest.approx((2 / 3 + 0) / 2)
    precision, recall = recs.precision_recall_at_k(top, relevant, k=1)
    assert (precision, recall) == (pytest.approx(0.5), pytest.approx((1 / 3) / 2))
    assert recs.catalogue_coverage(top, 6) == pytest.approx(5 / 6)
    assert recs.catalogue_coverage(top, 10) == pytest.approx(0.5)


def test_auc_by_hand() -> None:
    scores = np.array([[0.9, 0.5, 0.5, 0.1, 0.8]])
    relevant = sp.csr_matrix(np.array([[0, 1, 0, 0, 0]]))
    excluded = sp.csr_matrix(np.array([[1, 0, 0, 0, 0]]))  # column 0 is out of the ranking
    # positive 0.5 against negatives 0.5 (tie: 1/2), 0.1 (1), 0.8 (0): 1.5 / 3
    assert recs.auc_per_person(scores, relevant, excluded)[0] == pytest.approx(0.5)
    nothing = sp.csr_matrix((1, 5))
    # with column 0 as a negative too: 1.5 / 4
    assert recs.auc_per_person(scores, relevant, nothing)[0] == pytest.approx(0.375)


def test_ranking_metrics_remove_training_items() -> None:
    train = sp.csr_matrix(np.array([[1.0, 0, 0, 0], [0, 0, 0, 0]]))
    relevant = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 0]]))  # row 1 has no test item
    scores = np.array([[4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    m = recs.ranking_metrics(lambda rows: scores[rows], train, relevant, k=1)
    assert m.people == 1
    assert m.precision_at_k == 1.0  # column 0 (training) skipped, column 1 is first
    assert m.auc == 1.0 and m.coverage == 0.25
    with pytest.raises(recs.NotEnoughData):
        recs.ranking_metrics(lambda rows: scores[rows], train, sp.csr_matrix((2, 4)), k=1)


def test_time_split_and_cutoff_at_fraction() -> None:
    interactions = pl.DataFrame({
        "person_id": ["p"] * 10, "product_id": [f"x{i}" for i in range(10)],
        "kind": ["view"] * 10, "ts": [START + timedelta(days=i) for i in range(10)]})
    cutoff = recs.cutoff_at_fraction(interactions, 0.2)
    train, test = recs.time_split(interactions, cutoff)
    assert (train.height, test.height) == (8, 2)
    assert train["ts"].max() < test["ts"].min()


def test_recency_from_the_persons_own_newest_interaction() -> None:
    ts = [START, START + timedelta(days=10), START + timedelta(days=100)]
    interactions = pl.DataFrame({"person_id": ["p", "p", "q"], "product_id": ["x", "y", "x"],
                                 "kind": ["view", "view", "view"], "ts": ts})
    products = pl.DataFrame({"product_id": ["x", "y"], "category": ["c", "c"],
                             "price": [1.0, 2.0]})
    weights = {}
    for origin in ("shop", "person"):
        model = recs.fit(interactions, products, recs.RecsConfig(
            epochs=1, no_components=4, half_life_days=10.0, recency_from=origin))
        p = model.user_index["p"]
        weights[origin] = (model.train[p, model.product_index["x"]],
                           model.train[p, model.product_index["y"]])
    assert weights["person"] == (pytest.approx(0.5), pytest.approx(1.0))  # 10 days = 1 half-life
    # from the shop's newest (day 100) p's views are 9 and 10 half-lives old
    assert weights["shop"] == (pytest.approx(2 ** -10), pytest.approx(2 ** -9))
