"""How close does the send-time model get to the simulator's hidden preferred hours?

    .venv/bin/python bench/send_time.py                          # 10,500 visitors, 30 days
    .venv/bin/python bench/send_time.py --pushes-per-week 2      # the simulator's default

Simulates a shop with the simulator's Python API (pushes more frequent than the default, so
that several hundred people open at least 5), builds the model's input from the simulated
events, fits `ml.send_time` and prints, for people with at least `--min-opens` push opens,
the share whose predicted local hour is within 1 hour (circular) of their true preferred
hour, beside the one-hour-for-everyone baseline (the population's best hour).

The input is what the pipeline would hold, except the person: events are keyed by the
simulator's TRUE person id (truth table `event_truth`), not by the identity graph's, so this
measures the model alone, not identity resolution. Per event: the device clock's timestamp
(UTC; what the collector stores, skewed clocks included), accepted events only (no invalid
ones, retries once). `push_opened` -> kind 'push_opened'; every other event a person made on
a device -> 'activity' (`push_received` is the shop's send, not activity; back-office events
have no device). Zones: each person's IANA zone from the truth (what a device reports).
Tokens: each push token with the device type it reported and when it was last seen.
"""

from __future__ import annotations

import argparse
import sys
import time
import zoneinfo
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ml import send_time as st  # noqa: E402
from simulator import SimConfig, Simulation, simulate  # noqa: E402


def model_inputs(sim: Simulation) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(events, zones, tokens) in the model's input shape from a simulation's truth tables."""
    et = sim.truth["event_truth"].filter(
        pl.col("is_valid"), ~pl.col("is_retry"), pl.col("device_id").is_not_null(),
        pl.col("event_type") != "push_received",
    )
    events = et.select(
        "person_id",
        ts=pl.col("client_ts"),
        kind=pl.when(pl.col("event_type") == "push_opened").then(pl.lit("push_opened"))
        .otherwise(pl.lit("activity")),
    )
    zones = sim.truth["people"].select("person_id", timezone="time_zone")
    devices = sim.truth["devices"].filter(pl.col("push_token").is_not_null())
    tokens = (
        et.group_by("person_id", "device_id").agg(last_seen=pl.col("client_ts").max())
        .join(devices.select("device_id", "push_token", "device_type"), on="device_id")
        .select("person_id", "push_token", "device_type", "last_seen",
                is_valid=pl.lit(True))
    )
    return events, zones, tokens


def zone_check(sim: Simulation) -> str:
    """The simulator places people with fixed UTC offsets; the model uses zone rules.
    Both must agree on every zone over the simulated period."""
    cities = sim.truth["people"].select("time_zone", "utc_offset_hours").unique()
    start = datetime(sim.config.start.year, sim.config.start.month, sim.config.start.day,
                     tzinfo=UTC)
    days = np.arange(0, sim.config.days + 1)
    for zone, offset in cities.iter_rows():
        tz = zoneinfo.ZoneInfo(zone)
        for d in days:
            t = start + (d * np.timedelta64(1, "D")).item()
            if t.astimezone(tz).utcoffset().total_seconds() != offset * 3600:
                raise SystemExit(f"{zone}: zone rules and simulator offset {offset} h differ")
    return f"zone rules agree with the simulator's fixed UTC offsets in all {cities.height} zones"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, default=10_500)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pushes-per-week", type=float, default=14.0,
                        help="SimConfig.push_campaigns_per_week (simulator default 2)")
    parser.add_argument("--min-opens", type=int, default=5)
    defaults = st.SendTimeParams()
    parser.add_argument("--open-weight", type=float, default=defaults.open_weight)
    parser.add_argument("--activity-weight", type=float, default=defaults.activity_weight)
    parser.add_argument("--prior-strength", type=float, default=defaults.prior_strength)
    parser.add_argument("--kernel", type=float, nargs=2, default=defaults.kernel,
                        metavar=("CENTRE", "SIDE"))
    args = parser.parse_args(argv)
    params = st.SendTimeParams(args.open_weight, args.activity_weight, args.prior_strength,
                               tuple(args.kernel))

    cfg = SimConfig(visitors=args.visitors, days=args.days, seed=args.seed,
                    push_campaigns_per_week=args.pushes_per_week)
    t = time.perf_counter()
    sim = simulate(cfg)
    t_sim = time.perf_counter() - t
    print(f"simulated {args.visitors:,} visitors, {args.days} days, seed {args.seed}, "
          f"{args.pushes_per_week:g} push campaigns a week: "
          f"{sim.truth['event_truth'].height:,} events in {t_sim:.1f} s")
    print(zone_check(sim))
    print("people keyed by the simulator's true person id (event_truth), not the identity "
          "graph's")

    events, zones, tokens = model_inputs(sim)
    t = time.perf_counter()
    model = st.fit(events, zones, default_zone="Europe/Moscow", params=params)
    pred = st.predict(model, tokens)
    base = st.predict_baseline(model, tokens)
    t_fit = time.perf_counter() - t
    print(f"model: open_weight={params.open_weight:g} activity_weight="
          f"{params.activity_weight:g} prior_strength={params.prior_strength:g} kernel="
          f"({params.kernel[0]:.3g}, {params.kernel[1]:.3g}); fit + predict {t_fit:.2f} s "
          f"for {pred.height:,} people, population hour {model.population_hour}")

    opens = events.filter(pl.col("kind") == "push_opened").group_by("person_id").len("opens")
    truth = sim.truth["people"].select("person_id", "preferred_hour")
    table = (
        truth.join(opens, on="person_id", how="left").with_columns(pl.col("opens").fill_null(0))
        .join(pred.select("person_id", "best_local_hour", "confidence"), on="person_id")
        .join(base.select("person_id", base_hour="best_local_hour"), on="person_id")
    )
    print(f"{'push opens':>12} {'people':>7} {'within_1h':>10} {'baseline':>9} "
          f"{'exact':>6} {'confidence':>11}")
    groups = [(0, 0), (1, args.min_opens - 1), (args.min_opens, None)]
    for lo, hi in groups:
        g = table.filter(pl.col("opens") >= lo)
        if hi is not None:
            g = g.filter(pl.col("opens") <= hi)
        if g.height == 0:
            continue
        label = f"{lo}" if hi == lo else f"{lo}-{hi}" if hi is not None else f">= {lo}"
        p, b, h = (g[c].to_numpy() for c in ("best_local_hour", "base_hour", "preferred_hour"))
        print(f"{label:>12} {g.height:>7,} {st.share_within(p, h):>10.3f} "
              f"{st.share_within(b, h):>9.3f} {np.mean(p == h):>6.3f} "
              f"{g['confidence'].mean():>11.3f}")

    target = table.filter(pl.col("opens") >= args.min_opens)
    if target.height == 0:
        raise SystemExit(f"nobody has {args.min_opens} push opens: raise --pushes-per-week")
    within = st.share_within(target["best_local_hour"].to_numpy(),
                             target["preferred_hour"].to_numpy())
    baseline = st.share_within(target["base_hour"].to_numpy(),
                               target["preferred_hour"].to_numpy())
    with_token = pred.filter(pl.col("push_token").is_not_null())
    # The chosen token must be one of the person's own devices', of that device's kind.
    own = (sim.truth["devices"].join(sim.truth["device_users"], on="device_id")
           .select("person_id", "push_token", "kind"))
    right = with_token.join(own, on=["person_id", "push_token"]).filter(
        pl.col("channel") == pl.col("kind")).height
    print("channels: " + ", ".join(
        f"{c} {n:,}" for c, n in with_token.group_by("channel").len().sort("channel").iter_rows()
    ) + f"; {pred.height - with_token.height:,} people without a push token; "
        f"{right:,} of {with_token.height:,} tokens are the person's own, channel = device kind")
    print(f"RESULT within_1h={within:.3f} baseline_within_1h={baseline:.3f} "
          f"people={target.height}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
