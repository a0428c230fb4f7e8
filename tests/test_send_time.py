"""The send-time and channel model: local hours with real zone rules, shrinkage toward the
population, channel choice, errors, and a small simulated shop where it beats one hour for
everyone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest

from bench.send_time import model_inputs
from ml import send_time as st
from simulator import SimConfig, simulate

DAY0 = date(2026, 1, 5)


def at_local(zone: str, day: date, hour: int, minute: int = 10) -> datetime:
    """A wall-clock time in `zone`, as the UTC instant the events store."""
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(zone))
    return local.astimezone(UTC)


def events(rows: list[tuple[str, datetime, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"person_id": pl.String,
                                      "ts": pl.Datetime("us", "UTC"), "kind": pl.String},
                        orient="row")


def habit(person: str, zone: str, hour: int, n: int, kind: str = "push_opened",
          start: date = DAY0) -> list[tuple[str, datetime, str]]:
    """`n` events on `n` consecutive days at `hour` local time."""
    return [(person, at_local(zone, start + timedelta(days=d), hour), kind) for d in range(n)]


def crowd(hour: int, people: int = 10, days: int = 10, zone: str = "UTC") -> list:
    """A population of people active at `hour` local."""
    return [r for i in range(people) for r in habit(f"crowd{i}", zone, hour, days, "activity")]


def zones(mapping: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame({"person_id": list(mapping), "timezone": list(mapping.values())})


def row(frame: pl.DataFrame, person: str) -> dict:
    return frame.filter(pl.col("person_id") == person).row(0, named=True)


def test_many_opens_at_19_local_gives_19() -> None:
    ev = events(crowd(9) + habit("eve", "Asia/Novosibirsk", 19, 20))
    out = st.best_send_times(ev, zones({"eve": "Asia/Novosibirsk"}))
    eve = row(out, "eve")
    assert eve["best_local_hour"] == 19  # 12:10 UTC: a UTC model would say 12
    assert eve["confidence"] > 0.8
    assert row(out, "crowd0")["best_local_hour"] == 9


def test_berlin_across_daylight_saving_keeps_the_local_hour() -> None:
    # 19:10 in Berlin is 18:10 UTC in winter and 17:10 UTC in summer.
    rows = habit("hans", "Europe/Berlin", 19, 6, start=date(2026, 3, 25))  # DST from 29 March
    rows += habit("hans", "Europe/Berlin", 19, 10, start=date(2026, 10, 20))  # until 25 Oct
    ev = events(crowd(9) + rows)
    utc_hours = {r[1].hour for r in rows}
    assert utc_hours == {17, 18}
    z = zones({"hans": "Europe/Berlin"})
    local = st.local_hours(ev.filter(pl.col("person_id") == "hans"), z)
    assert local["local_hour"].to_list() == [19] * len(rows)
    assert row(st.best_send_times(ev, z), "hans")["best_local_hour"] == 19


def test_people_without_a_zone_use_the_default_zone() -> None:
    rows = habit("aki", "Asia/Tokyo", 20, 10) + habit("bob", "Asia/Tokyo", 20, 10)
    ev = events(crowd(3) + rows)  # the crowd has no zone either: 12:10 in Tokyo
    z = zones({"bob": "Not/AZone"})  # not an IANA name: the default too
    out = st.best_send_times(ev, z, default_zone="Asia/Tokyo")
    assert row(out, "aki")["best_local_hour"] == 20
    assert row(out, "bob")["best_local_hour"] == 20
    assert row(st.best_send_times(ev, z), "aki")["best_local_hour"] == 11  # UTC by default


def test_latest_reported_zone_wins() -> None:
    t = datetime(2026, 9, 1, tzinfo=UTC)
    reported = pl.DataFrame({
        "person_id": ["a", "a", "a", "b", "c"],
        "ts": [t, t + timedelta(days=3), t + timedelta(days=4), t, t],
        "timezone": ["Europe/Moscow", "Asia/Omsk", "Not/AZone", None, "Europe/Berlin"],
    })
    z = st.latest_zones(reported)
    assert dict(z.iter_rows()) == {"a": "Asia/Omsk", "c": "Europe/Berlin"}


def test_no_history_gets_the_population_hour_with_lower_confidence() -> None:
    ev = events(crowd(21, people=6) + crowd(8, people=3) + habit("eve", "UTC", 15, 25))
    model = st.fit(ev)
    assert model.population_hour == 21
    out = st.predict(model, people=["newcomer"])
    new, eve = row(out, "newcomer"), row(out, "eve")
    assert new["best_local_hour"] == 21
    assert eve["best_local_hour"] == 15
    assert new["confidence"] < eve["confidence"]
    base = st.predict_baseline(model, people=["newcomer"])
    assert base["best_local_hour"].unique().to_list() == [21]
    assert base["person_id"].to_list() == out["person_id"].to_list()


def test_one_open_is_shrunk_toward_the_population() -> None:
    ev = events(crowd(9) + habit("one", "UTC", 21, 1) + habit("many", "UTC", 21, 30))

    def fitted(k: float) -> tuple[st.SendTimeModel, dict[str, np.ndarray]]:
        model = st.fit(ev, params=st.SendTimeParams(prior_strength=k))
        post = model.posterior()
        ids = model.person_ids.to_list()
        return model, {p: post[ids.index(p)] for p in ("one", "many")}

    model, post = fitted(2.0)
    # Between its own history (all at 21) and the population (all around 9).
    assert 0 < post["one"][21] < post["many"][21] < 1
    assert post["one"][9] > post["many"][9] > 0
    out = st.predict(model)
    assert row(out, "one")["confidence"] < row(out, "many")["confidence"]
    # A strong prior moves the one-open person to the population hour, not the 30-open one.
    strong = st.predict(fitted(50.0)[0])
    assert row(strong, "one")["best_local_hour"] == 9
    assert row(strong, "many")["best_local_hour"] == 21
    assert row(st.predict(fitted(0.1)[0]), "one")["best_local_hour"] == 21


def test_an_active_hour_counts_once_and_opens_weigh_more() -> None:
    busy = [("ann", at_local("UTC", DAY0, 10, m), "activity") for m in range(0, 60, 2)]
    ev = events(crowd(3) + busy + habit("ann", "UTC", 15, 3, "activity"))
    # 30 events in one hour are one active hour: three days at 15 win.
    assert row(st.best_send_times(ev), "ann")["best_local_hour"] == 15

    ev = events(crowd(3) + habit("ann", "UTC", 8, 2) + habit("ann", "UTC", 18, 3, "activity"))
    assert row(st.best_send_times(ev), "ann")["best_local_hour"] == 8  # 2 opens x 2 > 3
    even = st.SendTimeParams(open_weight=1.0)
    assert row(st.best_send_times(ev, params=even), "ann")["best_local_hour"] == 18


def test_the_best_hour_centres_the_busiest_three_hours() -> None:
    rows = habit("eve", "UTC", 14, 4, "activity")
    rows += habit("eve", "UTC", 19, 3, "activity") + habit("eve", "UTC", 21, 3, "activity")
    ev = events(crowd(3) + rows)
    # 19-21 holds 6 active hours, 13-15 only 4: 20 is an hour from all of them.
    assert row(st.best_send_times(ev), "eve")["best_local_hour"] == 20
    unsmoothed = st.SendTimeParams(kernel=(1.0, 0.0))
    assert row(st.best_send_times(ev, params=unsmoothed), "eve")["best_local_hour"] == 14


def test_hours_wrap_around_midnight() -> None:
    rows = habit("owl", "UTC", 23, 5) + habit("owl", "UTC", 0, 5) + habit("owl", "UTC", 1, 4)
    out = st.best_send_times(events(crowd(12) + rows))
    assert row(out, "owl")["best_local_hour"] == 0
    assert list(st.circular_hour_distance(np.array([23, 0, 12]), np.array([1, 23, 0]))) == [
        2, 1, 12]


def test_channel_is_the_most_recent_valid_token() -> None:
    t = datetime(2026, 9, 1, tzinfo=UTC)
    apns = "ab" * 32
    tokens = pl.DataFrame(
        [
            ("p1", "web-old", "web", t, True),
            ("p1", "ios-tok", "ios", t + timedelta(days=2), True),
            ("p1", "fcm:newer-but-invalid", "android", t + timedelta(days=5), False),
            ("p2", "fcm:gone", "android", t, False),
            ("p3", apns, "mobile", t, True),  # old SDK: the generic type, an APNs token
            ("p4", "abc:APA91bxyz", "MOBILE", t, True),
            ("p5", "web-a", "web", t, None),
        ],
        schema={"person_id": pl.String, "push_token": pl.String, "device_type": pl.String,
                "last_seen": pl.Datetime("us", "UTC"), "is_valid": pl.Boolean},
        orient="row",
    )
    model = st.fit(events(crowd(9)))
    out = st.predict(model, tokens, people=["p6"])
    assert (row(out, "p1")["channel"], row(out, "p1")["push_token"]) == ("ios", "ios-tok")
    assert (row(out, "p2")["channel"], row(out, "p2")["push_token"]) == (None, None)
    assert (row(out, "p3")["channel"], row(out, "p3")["push_token"]) == ("ios", apns)
    assert row(out, "p4")["channel"] == "android"
    assert row(out, "p5")["channel"] is None  # validity unknown: not used
    assert row(out, "p6")["push_token"] is None
    assert row(out, "crowd0")["best_local_hour"] == 9
    assert st.predict_baseline(model, tokens).filter(
        pl.col("person_id") == "p1")["push_token"].to_list() == ["ios-tok"]


def test_open_hit_rate_scores_later_opens_in_local_time() -> None:
    ev = events(crowd(9) + habit("eve", "Europe/Berlin", 19, 10))
    z = zones({"eve": "Europe/Berlin"})
    model = st.fit(ev, z)
    later = events(habit("eve", "Europe/Berlin", 20, 2, start=date(2026, 7, 1))
                   + habit("eve", "Europe/Berlin", 3, 1) + habit("nobody", "UTC", 9, 5))
    # 20:10 in July is 18:10 UTC: only real zone rules put it within an hour of 19.
    assert st.open_hit_rate(st.predict(model), later, z) == pytest.approx(2 / 3)
    assert st.open_hit_rate(st.predict_baseline(model), later, z) == 0.0
    with pytest.raises(st.NotEnoughData):
        st.open_hit_rate(st.predict(model), ev.filter(pl.col("kind") == "activity"), z)


def test_not_enough_data_and_malformed_input() -> None:
    with pytest.raises(st.NotEnoughData):
        st.fit(events([]))
    with pytest.raises(st.NotEnoughData):
        st.best_send_times(events([(None, datetime(2026, 9, 1, tzinfo=UTC), "activity")]))
    with pytest.raises(st.NotEnoughData):
        st.share_within(np.array([]), np.array([]))
    good = events(crowd(9, people=1, days=1))
    with pytest.raises(ValueError, match="tz-aware"):
        st.fit(good.with_columns(pl.col("ts").dt.replace_time_zone(None)))
    with pytest.raises(ValueError, match="kinds"):
        st.fit(good.with_columns(kind=pl.lit("page_view")))
    with pytest.raises(ValueError, match="IANA"):
        st.fit(good, default_zone="Mars/Olympus")
    with pytest.raises(ValueError):
        st.SendTimeParams(prior_strength=-1)


def test_beats_one_hour_for_everyone_on_a_simulated_shop() -> None:
    sim = simulate(SimConfig(visitors=400, days=60, seed=3, push_campaigns_per_week=14))
    ev, z, tokens = model_inputs(sim)
    model = st.fit(ev, z, default_zone="Europe/Moscow")
    pred, base = st.predict(model, tokens), st.predict_baseline(model, tokens)
    opens = ev.filter(pl.col("kind") == "push_opened").group_by("person_id").len("opens")
    truth = (sim.truth["people"].join(opens, on="person_id").filter(pl.col("opens") >= 5)
             .select("person_id", "preferred_hour"))
    assert truth.height >= 50
    p = truth.join(pred, on="person_id").join(base, on="person_id", suffix="_base")
    hour = p["preferred_hour"].to_numpy()
    model_share = st.share_within(p["best_local_hour"].to_numpy(), hour)
    base_share = st.share_within(p["best_local_hour_base"].to_numpy(), hour)
    assert model_share >= 0.65
    assert model_share > base_share + 0.15
    # Without the truth: fitted on the first 40 days, scored on the last 20 days' opens.
    cut = ev["ts"].min() + timedelta(days=40)
    early = st.fit(ev.filter(pl.col("ts") < cut), z, default_zone="Europe/Moscow")
    late = ev.filter(pl.col("ts") >= cut)
    hit = st.open_hit_rate(st.predict(early), late, z, default_zone="Europe/Moscow")
    base_hit = st.open_hit_rate(st.predict_baseline(early), late, z, default_zone="Europe/Moscow")
    assert hit > base_hit + 0.05
    # The chosen token is one of the person's own push tokens, of the device's kind.
    own = (sim.truth["devices"].join(sim.truth["device_users"], on="device_id")
           .select("person_id", "push_token", "kind"))
    chosen = pred.filter(pl.col("push_token").is_not_null())
    assert chosen.height > 50
    matched = chosen.join(own, on=["person_id", "push_token"])
    assert matched.height == chosen.height
    assert (matched["channel"] == matched["kind"]).all()
