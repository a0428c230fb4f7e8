"""What makes real event streams hard: junk ids, retries, late arrival, skewed clocks, bad events.

Each hazard is applied column-wise to the true-time event frame and recorded in hidden `_`
columns, so the truth knows exactly which events were touched and how.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from simulator.config import JUNK_CLIENT_IDS, SimConfig
from simulator.ids import pick, uuids_from_bits
from simulator.keyed import Draws, rank_within

MS = 1000
DAY = 86_400 * MS

# kind -> (field the collector must name in its error, event types it applies to or None = any)
INVALID_KINDS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "missing_timestamp": ("timestamp", None),
    "unparsable_timestamp": ("timestamp", None),
    "far_future_timestamp": ("timestamp", None),
    "unknown_event": ("event", None),
    "no_identity": ("client_id", None),
    "empty_client_id": ("client_id", None),
    "bad_device_type": ("device_type", None),
    "price_as_string": ("price", ("product_view", "add_to_cart")),
    "scroll_depth_over_100": ("scroll_depth", ("scroll",)),
    "bad_phone": ("phone", ("user_login", "order_complete")),
    "missing_order_id": ("order_id", ("order_complete", "payment_success", "payment_failure")),
}
UNIVERSAL = [k for k, (_, types) in INVALID_KINDS.items() if types is None]
UNKNOWN_NAMES = ("addToCart", "pageview", "purchase", "screen_view")


def apply_hazards(cfg: SimConfig, ev: pl.DataFrame, devices: pl.DataFrame,
                  late_app_rate: float) -> pl.DataFrame:
    """Add event ids, client timestamps, arrival times, junk ids, invalid events and retries.

    `ev` is grouped by person with a fixed order within each person (journeys.assemble), so
    each event is keyed by (person, rank) and its hazards do not depend on the chunk.
    `late_app_rate` is the chance that an app event is late, set once for the whole run.
    Returns one row per line sent, with the arrival sort key `_arrival`, `_person`, `_rank`,
    `_retry` (not yet in arrival order: the stream merges chunks by that key).
    """
    n = ev.height
    person = ev["_person"].to_numpy()
    rank = rank_within(person)
    d = Draws(cfg.seed, "hazards", person, rank=rank)
    ts = ev["_ts"].to_numpy()
    dev = ev["_device"].to_numpy()
    has_dev = dev >= 0
    skew = np.where(has_dev, devices["clock_skew_ms"].to_numpy()[np.where(has_dev, dev, 0)], 0)
    client_ts = ts + skew
    etype = ev["event"]

    # Late: app events queued offline and sent days later. Others arrive within seconds.
    is_app = has_dev & (devices["kind_idx"].to_numpy()[np.where(has_dev, dev, 0)] > 0)
    late = is_app & (d.random("late") < late_app_rate)
    delay = np.where(
        late,
        d.uniform("late_delay", 1.0, max(cfg.late_max_days, 1.0)) * DAY,
        d.uniform("delay", 100, 3000),
    ).astype(np.int64)
    arrival = ts + delay

    # Junk client ids from a buggy tracker release, on top of the always-"undefined" devices.
    junk_pick = has_dev & (d.random("junk") < cfg.junk_client_id_rate)
    junk_vals = pick(JUNK_CLIENT_IDS[:-1], d.integers("junk_value", 0, len(JUNK_CLIENT_IDS) - 1))
    client_id = pl.select(pl.when(pl.Series(junk_pick)).then(junk_vals)
                          .otherwise(ev["client_id"])).to_series()

    # Invalid events: a kind per event, falling back to a universal kind where it does not fit.
    invalid = d.random("invalid") < cfg.invalid_rate
    kinds = list(INVALID_KINDS)
    kind_idx = d.integers("invalid_kind", 0, len(kinds))
    fits = np.ones(n, dtype=bool)
    etype_np = etype.to_numpy()
    for k, (_, types) in enumerate(INVALID_KINDS.values()):
        if types is not None:
            sel = kind_idx == k
            fits[sel] = np.isin(etype_np[sel], types)
    needs_dev = np.isin(kind_idx, [kinds.index("empty_client_id"), kinds.index("bad_device_type")])
    fits &= ~needs_dev | has_dev
    fallback = np.array([kinds.index(u) for u in UNIVERSAL if u not in (
        "empty_client_id", "bad_device_type")])
    kind_idx = np.where(fits, kind_idx, fallback[d.integers("fallback", 0, len(fallback))])
    kind_name = pl.select(pl.when(pl.Series(invalid)).then(
        pick(kinds, kind_idx))).to_series().alias("_invalid_kind")
    field_name = pl.select(pl.when(pl.Series(invalid)).then(
        pick([f for f, _ in INVALID_KINDS.values()], kind_idx))).to_series()

    def kind_is(name: str) -> pl.Series:
        return pl.Series(invalid & (kind_idx == kinds.index(name)))

    ts_text = pl.Series(client_ts.astype("datetime64[ms]")).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
    ts_text = pl.select(
        pl.when(kind_is("missing_timestamp")).then(None)
        .when(kind_is("unparsable_timestamp")).then(
            pl.Series(client_ts.astype("datetime64[ms]")).dt.strftime("%d/%m/%Y %H:%M"))
        # Milliseconds sent where seconds were expected: a date thousands of years ahead is
        # not representable, so the classic symptom here is a year far in the future.
        .when(kind_is("far_future_timestamp")).then(
            pl.Series((client_ts + 100 * 365 * DAY).astype("datetime64[ms]"))
            .dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
        .otherwise(ts_text)
    ).to_series()

    out = ev.with_columns(
        timestamp=ts_text,
        event_id=uuids_from_bits(d.bits("event_id_hi"), d.bits("event_id_lo")),
        client_id=client_id,
        _client_ts=client_ts,
        _skew_ms=skew,
        _late=late,
        _invalid_kind=kind_name,
        _invalid_field=field_name,
        _junk=client_id.is_in(list(JUNK_CLIENT_IDS)).fill_null(False) | kind_is("empty_client_id"),
        _rank=rank,
    ).with_columns(
        event=pl.when(kind_is("unknown_event"))
        .then(pick(UNKNOWN_NAMES, d.integers("unknown_name", 0, len(UNKNOWN_NAMES))))
        .otherwise("event"),
        client_id=pl.when(kind_is("no_identity")).then(None)
        .when(kind_is("empty_client_id")).then(pl.lit(""))
        .otherwise("client_id"),
        user_id=pl.when(kind_is("no_identity")).then(None).otherwise("user_id"),
        device_type=pl.when(kind_is("bad_device_type"))
        .then(pick(("tablet", "desktop", "smart_tv"), d.integers("bad_device_type", 0, 3)))
        .otherwise("device_type"),
        scroll_depth=pl.when(kind_is("scroll_depth_over_100")).then(pl.lit(150))
        .otherwise("scroll_depth"),
        phone=pl.when(kind_is("bad_phone")).then(pl.lit("12345")).otherwise("phone"),
        order_id=pl.when(kind_is("missing_order_id")).then(None).otherwise("order_id"),
        _price_as_string=kind_is("price_as_string"),
        _true_event=etype,
    )

    # Retries: the same line sent again (same event_id) after a lost response.
    retried = d.random("retry") < cfg.retry_rate
    dup_src = np.flatnonzero(retried)
    src = np.concatenate([np.arange(n), dup_src])
    is_retry = np.r_[np.zeros(n, bool), np.ones(len(dup_src), bool)]
    arrival_all = np.concatenate(
        [arrival, arrival[dup_src] + d.integers("retry_delay", 1 * MS, 300 * MS)[dup_src]]
    )
    return out.gather(src).with_columns(
        _arrival=pl.Series(arrival_all), _retry=pl.Series(is_retry)
    )
