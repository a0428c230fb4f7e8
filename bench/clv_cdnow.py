"""The lifecycle models (ml/lifecycle.py) on CDNOW against the published figures.

Set-up of Fader, Hardie & Lee (2005): the cohort's purchases from 1997-01-01 to 1997-09-30
(39 weeks) calibrate the models, the next 39 weeks (to 1998-06-30) are the holdout; time in
weeks, frequency = repeat purchase days.

    .venv/bin/python bench/clv_cdnow.py [--data ../shared/data/cdnow_sample.txt]

The 1/10 sample (5 columns: master id, sample id, date, CDs, dollars) is the paper's data:
its BG/NBD parameters must come within 1 % of the published ones (exit status 1 otherwise).
The full master log (4 columns, with a header) is also read; the paper has no figures for it.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from ml import lifecycle  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cdnow_sample.txt"
CALIBRATION_END = datetime(1997, 9, 30)
HOLDOUT_END = datetime(1998, 6, 30)
# Fader, Hardie & Lee (2005), CDNOW 1/10 sample, 39-week calibration.
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_LOGLIK = -9582.4
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "v": 15.44}
TOLERANCE = 0.01


def load_cdnow(path: str | Path) -> tuple[pl.DataFrame, bool]:
    """The CDNOW log as orders (person_id, ordered_at, amount) and whether it is the paper's
    1/10 sample (5 columns) rather than the master log (4 columns, header line)."""
    rows = [line.split() for line in Path(path).read_text().splitlines()]
    rows = [r for r in rows if r and r[0].isdigit()]  # drops the master's header line
    widths = {len(r) for r in rows}
    if widths == {5}:
        is_sample = True
        rows = [[r[0], *r[2:]] for r in rows]  # master id; the sample id is a renumbering
    elif widths == {4}:
        is_sample = False
    else:
        raise ValueError(f"{path}: expected 4 or 5 columns per line, found {sorted(widths)}")
    orders = pl.DataFrame(
        {
            "person_id": [int(r[0]) for r in rows],
            "date": [r[1] for r in rows],
            "amount": [float(r[3]) for r in rows],
        }
    ).select(
        "person_id",
        pl.col("date").str.strptime(pl.Datetime("us"), "%Y%m%d").alias("ordered_at"),
        "amount",
    )
    return orders, is_sample


def _compare(name: str, got: float, published: float) -> tuple[str, float]:
    rel = got / published - 1.0
    return f"  {name:<6} {got:>10.4f}   published {published:>9.3f}   ({rel:+.2%})", rel


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA),
                    help="CDNOW sample (5 columns) or master (4 columns) file")
    args = ap.parse_args(argv)

    orders, is_sample = load_cdnow(args.data)
    print(f"data: {args.data} ({'1/10 sample' if is_sample else 'master log'}): "
          f"{orders.height:,} purchases of {orders['person_id'].n_unique():,} customers")

    started = time.perf_counter()
    summary = lifecycle.rfm_summary(orders, end=CALIBRATION_END, period_days=7)
    bg = lifecycle.fit_bgnbd(summary)
    fit_seconds = time.perf_counter() - started
    repeat = int((summary["frequency"] > 0).sum())
    print(f"calibration to {CALIBRATION_END:%Y-%m-%d}: {summary.height:,} customers, "
          f"{repeat:,} repeat buyers, {int(summary['frequency'].sum()):,} repeat purchase days")
    if not is_sample:
        print("(the published figures below are the 1/10 sample's: for reference only)")
    print(f"BG/NBD (fit {fit_seconds:.2f} s, converged={bg.converged}):")
    worst = 0.0
    for name, published in PUBLISHED_BGNBD.items():
        line, rel = _compare(name, getattr(bg, name), published)
        worst = max(worst, abs(rel))
        print(line)
    print(f"  loglik {bg.loglik:>10.1f}"
          + (f"   published {PUBLISHED_LOGLIK:>9.1f}" if is_sample else ""))

    gg = lifecycle.fit_gamma_gamma(summary)
    print(f"Gamma-Gamma on {gg.customers:,} repeat buyers' mean repeat-purchase-day value "
          f"(converged={gg.converged}):")
    for name, published in PUBLISHED_GG.items():
        print(_compare(name, getattr(gg, name), published)[0])
    print(f"  population mean value per purchase day v*p/(q-1) = {gg.mean_order_value:.2f}; "
          f"correlation of frequency and monetary among repeat buyers = "
          f"{_frequency_monetary_corr(summary):.3f} (the model assumes none)")

    ev = lifecycle.evaluate(orders, CALIBRATION_END, HOLDOUT_END, period_days=7)
    print(f"holdout {CALIBRATION_END:%Y-%m-%d} .. {HOLDOUT_END:%Y-%m-%d} "
          f"({ev.holdout_periods:.0f} weeks), {ev.customers:,} customers:")
    print(f"  repeat purchase days: actual {ev.actual_total:,}, BG/NBD {ev.predicted_total:,.1f},"
          f" historical-rate baseline {ev.baseline_total:,.1f}")
    print(f"  per customer MAE: BG/NBD {ev.mae_model:.3f}, baseline {ev.mae_baseline:.3f}; "
          f"RMSE: BG/NBD {ev.rmse_model:.3f}, baseline {ev.rmse_baseline:.3f}")
    print("  conditional expectations by calibration frequency (mean holdout purchase days):")
    print("    x     customers   actual   BG/NBD   baseline")
    table = (
        ev.per_customer.with_columns(x=pl.min_horizontal(pl.col("frequency"), 7))
        .group_by("x")
        .agg(pl.len().alias("n"), pl.col("actual").mean(), pl.col("predicted").mean(),
             pl.col("baseline").mean())
        .sort("x")
    )
    for x, n, act, pred, base in table.iter_rows():
        label = f"{x}+" if x == 7 else str(x)
        print(f"    {label:<4}  {n:>9,}   {act:>6.3f}   {pred:>6.3f}   {base:>8.3f}")

    scores = lifecycle.score(orders, CALIBRATION_END, period_days=7)
    print(f"score(): {scores.height:,} rows; mean p_active {scores['p_active'].mean():.3f}, "
          f"expected orders 30d {scores['expected_orders_30d'].sum():,.1f} / "
          f"90d {scores['expected_orders_90d'].sum():,.1f}, "
          f"expected 12-month value ${scores['expected_value_12m'].sum():,.0f} in total")

    ok = True
    if is_sample:
        ok = worst <= TOLERANCE
        print(f"check: BG/NBD parameters within {TOLERANCE:.0%} of the published ones "
              f"(worst {worst:.2%}): {'PASS' if ok else 'FAIL'}")
    print(f"RESULT r={bg.r:.4f} alpha={bg.alpha:.4f} a={bg.a:.4f} b={bg.b:.4f} "
          f"holdout_predicted={ev.predicted_total:.1f} holdout_actual={ev.actual_total}")
    return 0 if ok else 1


def _frequency_monetary_corr(summary: pl.DataFrame) -> float:
    repeat = summary.filter(pl.col("frequency") > 0)
    return float(np.corrcoef(repeat["frequency"].to_numpy(), repeat["monetary"].to_numpy())[0, 1])


if __name__ == "__main__":
    sys.exit(main())
