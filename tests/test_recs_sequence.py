"""The "what comes next" part of ml/recs.py: products others had right after a person's
latest ones rise in that person's list; off by default; bad settings are named errors."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from ml import recs

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _histories() -> pl.DataFrame:
    """20 people each go through products 0..9 in their own order; everyone who had 'a'
    had 'b' right after it. 'newbie' has just had 'a'."""
    rows = []
    for p in range(20):
        order = [f"p{(p + i) % 10}" for i in range(10)]
        order.insert(p % 5, "a")
        order.insert(p % 5 + 1, "b")
        rows += [(f"u{p}", item, T0 + timedelta(minutes=i)) for i, item in enumerate(order)]
    rows += [("newbie", "p3", T0), ("newbie", "p7", T0 + timedelta(minutes=1)),
             ("newbie", "a", T0 + timedelta(minutes=2))]
    return pl.DataFrame(rows, schema=["person_id", "product_id", "ts"], orient="row").with_columns(
        kind=pl.lit("purchase"))


def _products() -> pl.DataFrame:
    ids = [f"p{i}" for i in range(10)] + ["a", "b"]
    return pl.DataFrame({"product_id": ids, "category": [None] * len(ids),
                         "price": [None] * len(ids)},
                        schema={"product_id": pl.String, "category": pl.String,
                                "price": pl.Float64})


def _rank_of_b(config: recs.RecsConfig) -> int:
    model = recs.fit(_histories(), _products(), config)
    lists = recs.recommend(model, ["newbie"], k=10)
    return lists.filter(pl.col("product_id") == "b")["rank"].item()


def test_what_comes_next_puts_the_usual_follower_first():
    base = recs.RecsConfig(epochs=5, seed=3)
    assert base.sequence_weight == 0  # off unless asked for: the shop's lists are LightFM's
    assert _rank_of_b(replace(base, sequence_weight=5.0, sequence_window=1,
                                 sequence_recent=1)) == 1
    model = recs.fit(_histories(), _products(), base)
    assert model.transitions is None and model.recent is None


def test_a_model_pickled_before_the_part_existed_still_scores():
    model = recs.fit(_histories(), _products(), recs.RecsConfig(epochs=2, sequence_weight=5.0))
    del model.__dict__["transitions"], model.__dict__["recent"]  # an older pickle's shape
    assert recs.recommend(model, ["newbie"], k=3).height == 3


@pytest.mark.parametrize("bad, message", [
    ({"sequence_weight": -1.0}, "sequence_weight must be >= 0"),
    ({"sequence_window": 0}, "sequence_window and sequence_recent must be >= 1"),
    ({"sequence_decay": 0.0}, r"sequence_decay must be in \(0, 1\]"),
])
def test_bad_sequence_settings_are_named(bad: dict, message: str):
    with pytest.raises(ValueError, match=message):
        recs.RecsConfig(**bad)
