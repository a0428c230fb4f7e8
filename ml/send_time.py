"""Send-time and channel model: the local hour at which to push each person, and through which
of their push tokens.

What it learns
--------------
Each person gets a 24-bin circular histogram of the LOCAL hours at which they were seen:

* ``push_opened`` events: one count each, weighted ``open_weight`` (2 by default): an open is
  a direct answer to a push at that hour, the thing the model is for;
* ``activity`` events (any event the person made: page views, searches, orders...; not
  ``push_received``, the hour the shop sent, which ``ml.marts`` leaves out): counted
  once per local clock hour in which the person was active (weight ``activity_weight``, 1), so
  a 40-event visit weighs as much as a 2-event one and busy browsers do not drown their opens.

Local hours use the real zone rules (polars ``convert_time_zone``, the IANA database, daylight
saving included), from a per-person IANA zone; people without a zone, or with a name that is
not an IANA zone, use ``default_zone``. Timestamps must be tz-aware (UTC as stored).
``latest_zones`` gives each person the zone their events reported most recently.

The histogram is shrunk toward the population, empirical-Bayes (Dirichlet) style, as
Airship's and OneSignal's send-time optimisation describe: with ``n`` the person's weighted
count and ``k = prior_strength`` pseudo-counts (2 by default),

    posterior[h] = (counts[h] + k * population[h]) / (n + k)

where ``population`` is the mean of the people's own normalised histograms, so a heavy user
counts as one person. A person with one open moves only part of the way from the population
toward that hour; a person with many opens is ruled by them; a person with no history gets
the population itself.

The best hour is the mode of the posterior smoothed over +-1 hour with a circular kernel
(``kernel``: weight of the hour itself and of each neighbour). The default, equal thirds,
makes it the centre of the three-hour window holding the most posterior mass: a send is
judged by whether the person is around within an hour of it, and a shopper active at 19:55
and at 20:05 has one habit, not two. (So someone whose opens all fall at 20, with the
population's mass at 18, is sent at 19, which covers both; ties go to the hour's own mass.)
Chosen on the simulator with seed 2, reported with seed 1: equal thirds beat 0.5 / 0.25 and
no smoothing by 4 and 10 points; open weights of 1 to 3 and k from 0.5 to 4 move the share by
2 points at most. The simulator's opens are noisier than its visits, so a weight of 1 scores
best there; 2 keeps the direct answer to a push ahead of a visit.

Output (``predict`` / ``best_send_times``): one row per person with ``best_local_hour``
(0-23), ``confidence`` (the posterior mass within +-1 h of that hour: the model's chance that
the person's next open or active hour falls in that three-hour window; people without
history get the population's, lower than that of a person with a steady habit), ``channel``
(``ios`` / ``android`` / ``web``) and ``push_token``: the valid token most recently seen, null
when the person has none. ``predict_baseline`` gives the one-hour-for-everyone baseline (the
population's best hour) in the same shape. ``open_hit_rate`` scores either on later push
opens (the share of them within +-1 h of the predicted hour): a holdout needing no truth.

Channel: tokens with ``is_valid`` false or null are skipped; the newest ``last_seen`` wins
(ties: the token's text, for a stable answer). Apps on old SDKs report the generic device
type ``mobile``; their channel is read from the token's form (64 hex digits: an APNs token,
``ios``; ``<id>:<key>``: an FCM registration token, ``android``), other types are skipped.

Limits: opens are counted, not open rates, so a shop that always sends at one hour teaches
the model that hour through the opens (activity hours still pull toward the person's own
rhythm); passing only recent events lets the model follow people whose habits change.

Errors: ``NotEnoughData`` when there is no event to learn from (empty frame, or no event
left after dropping null timestamps and people); ``ValueError`` for a malformed frame
(missing column, unknown ``kind``, naive timestamps, bad parameters).

Plain Python on polars and numpy: no database, Dagster or MLflow here (``ml.train`` does the
reading, tracking and writing). Quality on the simulator's hidden preferred hours:
``bench/send_time.py``.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl

HOURS = 24
KINDS = ("push_opened", "activity")
CHANNELS = ("ios", "android", "web")
_APNS = re.compile(r"^[0-9A-Fa-f]{64}$")
_FCM = re.compile(r"^[^:\s]+:[^:\s]+$")


class NotEnoughData(Exception):
    """Nothing to learn from: no usable event at all."""


@dataclass(frozen=True)
class SendTimeParams:
    open_weight: float = 2.0  # one push open counts as this many active hours
    activity_weight: float = 1.0  # one local clock hour with any activity
    prior_strength: float = 2.0  # pseudo-counts of the population distribution (k)
    # Weight of the hour itself and of each neighbour. Equal weights make the best hour the
    # centre of the busiest three-hour window, the +-1 h a send is judged by.
    kernel: tuple[float, float] = (1 / 3, 1 / 3)

    def __post_init__(self) -> None:
        centre, side = self.kernel
        if min(self.open_weight, self.activity_weight, self.prior_strength, centre, side) < 0:
            raise ValueError("send-time weights, prior strength and kernel must be >= 0")
        if centre + 2 * side <= 0:
            raise ValueError("the kernel must have a positive weight")


@dataclass(frozen=True)
class SendTimeModel:
    params: SendTimeParams
    default_zone: str
    person_ids: pl.Series  # people with at least one event, in the row order of `counts`
    counts: np.ndarray  # people x 24, weighted counts by local hour
    population: np.ndarray  # 24, sums to 1: the mean person's share of each hour

    @property
    def population_hour(self) -> int:
        return int(_best_hours(self.population[None, :], self.params.kernel)[0])

    def posterior(self) -> np.ndarray:
        """People x 24: each person's counts shrunk toward the population (rows sum to 1)."""
        k = self.params.prior_strength
        n = self.counts.sum(axis=1, keepdims=True)
        return (self.counts + k * self.population) / (n + k)


def circular_hour_distance(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Hours between two hours of the day the short way round (23 and 0 are 1 apart)."""
    d = np.abs(np.asarray(a) - np.asarray(b)) % HOURS
    return np.minimum(d, HOURS - d)


def share_within(predicted: np.ndarray, actual: np.ndarray, hours: int = 1) -> float:
    """Share of predicted hours within `hours` (circular) of the actual ones."""
    predicted, actual = np.asarray(predicted), np.asarray(actual)
    if len(predicted) == 0:
        raise NotEnoughData("no people to evaluate")
    return float(np.mean(circular_hour_distance(predicted, actual) <= hours))


@lru_cache(maxsize=512)
def _is_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _require(frame: pl.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} frame lacks column(s) {missing}")


def latest_zones(events: pl.DataFrame) -> pl.DataFrame:
    """person_id, timezone: the IANA zone each person's events reported most recently
    (events: person_id, ts, timezone; nulls and names that are not zones are skipped), so
    someone who moves or travels is placed by where they are now."""
    _require(events, ("person_id", "ts", "timezone"), "events")
    names = [n for n in events["timezone"].drop_nulls().unique().to_list() if _is_zone(n)]
    return (
        events.filter(pl.col("timezone").is_in(names), pl.col("person_id").is_not_null())
        .sort("person_id", "ts", descending=[False, True], nulls_last=True)
        .unique("person_id", keep="first", maintain_order=True)
        .select("person_id", "timezone")
    )


def local_hours(events: pl.DataFrame, zones: pl.DataFrame | None = None,
                default_zone: str = "UTC") -> pl.DataFrame:
    """person_id, kind, local (naive local datetime), local_hour: each event on its
    person's wall clock, with the zone's real rules (DST included)."""
    _require(events, ("person_id", "ts", "kind"), "events")
    if not _is_zone(default_zone):
        raise ValueError(f"default_zone {default_zone!r} is not an IANA time zone")
    ts_type = events.schema["ts"]
    if not isinstance(ts_type, pl.Datetime) or ts_type.time_zone is None:
        raise ValueError(f"events.ts must be a tz-aware datetime (UTC), not {ts_type}")
    unknown = set(events["kind"].drop_nulls().unique().to_list()) - set(KINDS)
    if unknown or events["kind"].null_count():
        raise ValueError(f"event kinds must be one of {KINDS}, got {sorted(unknown) or [None]}")
    ev = events.select("person_id", "ts", "kind").drop_nulls(["person_id", "ts"])
    if zones is not None and zones.height:
        _require(zones, ("person_id", "timezone"), "zones")
        z = zones.select("person_id", "timezone").drop_nulls().unique("person_id", keep="first")
        ev = ev.join(z, on="person_id", how="left")
    else:
        ev = ev.with_columns(timezone=pl.lit(None, pl.String))
    names = [n for n in ev["timezone"].drop_nulls().unique().to_list() if _is_zone(n)]
    ev = ev.with_columns(
        timezone=pl.when(pl.col("timezone").is_in(names)).then("timezone")
        .otherwise(pl.lit(default_zone))
    )
    # convert_time_zone takes one zone per expression: one branch per zone present.
    local: pl.Expr | None = None
    for name in sorted({*names, default_zone}):
        conv = pl.col("ts").dt.convert_time_zone(name).dt.replace_time_zone(None)
        local = (pl.when(pl.col("timezone") == name).then(conv) if local is None
                 else local.when(pl.col("timezone") == name).then(conv))
    assert local is not None
    return ev.with_columns(local=local).with_columns(
        local_hour=pl.col("local").dt.hour().cast(pl.Int64)
    ).select("person_id", "kind", "local", "local_hour")


def _smooth(counts: np.ndarray, kernel: tuple[float, float]) -> np.ndarray:
    """Circular +-1 hour smoothing, normalised so a person's total weight is kept."""
    centre, side = kernel
    out = centre * counts + side * (np.roll(counts, 1, axis=-1) + np.roll(counts, -1, axis=-1))
    return out / (centre + 2 * side)


def _best_hours(p: np.ndarray, kernel: tuple[float, float]) -> np.ndarray:
    """Mode of the smoothed rows. A flat kernel ties the three hours around a one-hour habit:
    the hour's own mass breaks the tie (a tiny share, below any real difference)."""
    return (_smooth(p, kernel) + 1e-9 * p).argmax(axis=1)


def fit(events: pl.DataFrame, zones: pl.DataFrame | None = None, *, default_zone: str = "UTC",
        params: SendTimeParams | None = None) -> SendTimeModel:
    """Learn each person's local-hour histogram and the population's.

    events: person_id, ts (tz-aware), kind in {'push_opened', 'activity'}.
    zones: person_id, timezone (IANA); people missing from it use `default_zone`.
    """
    params = params or SendTimeParams()
    if events.height == 0:
        raise NotEnoughData("no events to learn send times from")
    loc = local_hours(events, zones, default_zone)
    if loc.height == 0:
        raise NotEnoughData("no events with a person and a timestamp")
    opens = loc.filter(pl.col("kind") == "push_opened").select(
        "person_id", "local_hour", w=pl.lit(params.open_weight))
    # An active hour counts once, however many events it holds.
    active = (loc.filter(pl.col("kind") == "activity")
              .select("person_id", pl.col("local").dt.truncate("1h"), "local_hour")
              .unique(["person_id", "local"])
              .select("person_id", "local_hour", w=pl.lit(params.activity_weight)))
    weighted = (pl.concat([opens, active]).group_by("person_id", "local_hour")
                .agg(pl.col("w").sum()).sort("person_id", "local_hour"))
    people = weighted["person_id"].unique().sort()
    row = people.search_sorted(weighted["person_id"])
    counts = np.zeros((people.len(), HOURS))
    np.add.at(counts, (row.to_numpy(), weighted["local_hour"].to_numpy()),
              weighted["w"].to_numpy())
    totals = counts.sum(axis=1)
    has = totals > 0
    if not has.any():
        raise NotEnoughData("every event has zero weight (open_weight and activity_weight)")
    population = (counts[has] / totals[has, None]).mean(axis=0)
    return SendTimeModel(params, default_zone, people, counts, population / population.sum())


def choose_channel(tokens: pl.DataFrame | None) -> pl.DataFrame:
    """person_id, channel, push_token: the valid token each person used most recently.

    tokens: person_id, push_token, device_type, last_seen, is_valid.
    """
    schema = {"person_id": pl.String, "channel": pl.String, "push_token": pl.String}
    if tokens is None or tokens.height == 0:
        return pl.DataFrame(schema=schema)
    _require(tokens, ("person_id", "push_token", "device_type", "last_seen", "is_valid"),
             "tokens")
    kind = pl.col("device_type").str.to_lowercase()
    token = pl.col("push_token")
    channel = (
        pl.when(kind.is_in(CHANNELS)).then(kind)
        .when(token.str.contains(_APNS.pattern)).then(pl.lit("ios"))
        .when(token.str.contains(_FCM.pattern)).then(pl.lit("android"))
    )
    return (
        tokens.filter(pl.col("is_valid").fill_null(False), token.is_not_null(), token != "",
                      pl.col("person_id").is_not_null())
        .with_columns(channel=channel)
        .filter(pl.col("channel").is_not_null())
        .sort(["person_id", "last_seen", "push_token"], descending=[False, True, True],
              nulls_last=True)
        .unique("person_id", keep="first", maintain_order=True)
        .select(pl.col("person_id").cast(pl.String), "channel",
                pl.col("push_token").cast(pl.String))
    )


def _people(model: SendTimeModel, tokens: pl.DataFrame | None,
            people: Iterable[str] | pl.Series | None) -> pl.Series:
    parts = [model.person_ids.cast(pl.String)]
    if tokens is not None and tokens.height:
        parts.append(tokens["person_id"].cast(pl.String))
    if people is not None:
        parts.append(pl.Series("person_id", list(people), dtype=pl.String))
    return pl.concat(parts).drop_nulls().unique().sort().alias("person_id")


def _with_channel(frame: pl.DataFrame, tokens: pl.DataFrame | None) -> pl.DataFrame:
    return frame.join(choose_channel(tokens), on="person_id", how="left", maintain_order="left")


def _window_mass(p: np.ndarray, hour: np.ndarray) -> np.ndarray:
    rows = np.arange(p.shape[0])
    return sum(p[rows, (hour + d) % HOURS] for d in (-1, 0, 1))


def predict(model: SendTimeModel, tokens: pl.DataFrame | None = None,
            people: Iterable[str] | pl.Series | None = None) -> pl.DataFrame:
    """person_id, best_local_hour, confidence, channel, push_token for everyone with events,
    tokens, or listed in `people` (those without events get the population's hour)."""
    everyone = _people(model, tokens, people)
    post = model.posterior()
    row = pl.DataFrame({"person_id": model.person_ids.cast(pl.String),
                        "_row": np.arange(model.person_ids.len())})
    idx = (pl.DataFrame({"person_id": everyone})
           .join(row, on="person_id", how="left", maintain_order="left")["_row"].to_numpy())
    # People without events: the population itself is their posterior.
    full = np.vstack([post, model.population[None, :]])
    p = full[np.where(np.isnan(idx), len(post), idx).astype(np.int64)]
    best = _best_hours(p, model.params.kernel)
    frame = pl.DataFrame({"person_id": everyone, "best_local_hour": best.astype(np.int64),
                          "confidence": np.clip(_window_mass(p, best), 0.0, 1.0)})
    return _with_channel(frame, tokens)


def predict_baseline(model: SendTimeModel, tokens: pl.DataFrame | None = None,
                     people: Iterable[str] | pl.Series | None = None) -> pl.DataFrame:
    """The same frame with one hour for everyone: the population's best hour."""
    everyone = _people(model, tokens, people)
    hour = model.population_hour
    mass = float(_window_mass(model.population[None, :], np.array([hour]))[0])
    frame = pl.DataFrame({"person_id": everyone,
                          "best_local_hour": np.full(everyone.len(), hour, dtype=np.int64),
                          "confidence": np.full(everyone.len(), min(mass, 1.0))})
    return _with_channel(frame, tokens)


def open_hit_rate(predictions: pl.DataFrame, events: pl.DataFrame,
                  zones: pl.DataFrame | None = None, *, default_zone: str = "UTC",
                  hours: int = 1) -> float:
    """Share of the push opens in `events` (say, a later holdout period) whose local hour is
    within `hours` of the person's `best_local_hour` in `predictions`: a score that needs no
    ground truth, for comparing a model with the baseline (`predict_baseline`) on the same
    opens. Opens of people missing from `predictions` are left out."""
    _require(predictions, ("person_id", "best_local_hour"), "predictions")
    _require(events, ("person_id", "ts", "kind"), "events")
    opens = events.filter(pl.col("kind") == "push_opened")
    if opens.height == 0:
        raise NotEnoughData("no push opens to score")
    hits = local_hours(opens, zones, default_zone).join(
        predictions.select("person_id", "best_local_hour"), on="person_id")
    return share_within(hits["best_local_hour"].to_numpy(), hits["local_hour"].to_numpy(), hours)


def best_send_times(events: pl.DataFrame, zones: pl.DataFrame | None = None,
                    tokens: pl.DataFrame | None = None, *, default_zone: str = "UTC",
                    params: SendTimeParams | None = None,
                    people: Iterable[str] | pl.Series | None = None) -> pl.DataFrame:
    """fit + predict in one call."""
    model = fit(events, zones, default_zone=default_zone, params=params)
    return predict(model, tokens, people)
