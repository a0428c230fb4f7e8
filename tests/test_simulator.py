"""The traffic simulator: determinism, validity against the collector, hidden truth, bounds."""

from __future__ import annotations

import datetime as dt
import gzip
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import psycopg
import pytest

from collector.catalogue import EVENT_TYPES
from collector.validation import validate_events
from simulator import SimConfig, simulate
from simulator.output import post_lines, write_jsonl
from simulator.truth import truth_dir_for, write_truth_files
from tests.recording_collector import Request, recording_collector

SMALL = SimConfig(visitors=400, days=14, seed=7)


@pytest.fixture(scope="module")
def sim():
    return simulate(SMALL)


@pytest.fixture(scope="module")
def big():
    # Large enough for rates to settle, small enough for a 2-core CI box (~300k events).
    return simulate(SimConfig(visitors=3000, days=30, seed=11))


def _write(cfg: SimConfig, folder: Path) -> Path:
    s = simulate(cfg)
    out = folder / "events.jsonl"
    write_jsonl(s.lines, out)
    write_truth_files(s.truth, truth_dir_for(out), cfg)
    return out


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(tmp_path: Path) -> None:
    a = _write(SMALL, tmp_path / "a")
    b = _write(SMALL, tmp_path / "b")
    c = _write(replace(SMALL, seed=8), tmp_path / "c")
    assert a.read_bytes() == b.read_bytes()
    for name in ("people", "identifiers", "event_truth", "sessions"):
        left = (tmp_path / "a" / "events.truth" / f"{name}.parquet").read_bytes()
        assert left == (tmp_path / "b" / "events.truth" / f"{name}.parquet").read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert a.read_bytes().count(b"\n") == pl.read_parquet(
        tmp_path / "a" / "events.truth" / "event_truth.parquet").height


def test_every_tracking_plan_event_type_is_produced(big) -> None:
    produced = set(big.truth["event_truth"]["event_type"].unique())
    assert produced == set(EVENT_TYPES)


def test_valid_events_pass_and_invalid_ones_fail_for_the_recorded_reason(sim) -> None:
    items = [orjson.loads(line) for line in sim.lines]
    truth = sim.truth["event_truth"]
    assert len(items) == truth.height
    _, rejections = validate_events(items, dt.datetime.now(dt.UTC))
    rejected = {r.index: r.errors for r in rejections}
    valid = truth["is_valid"].to_list()
    fields = truth["invalid_field"].to_list()
    assert not [i for i, ok in enumerate(valid) if ok and i in rejected]
    invalid = [i for i, ok in enumerate(valid) if not ok]
    assert invalid and all(i in rejected for i in invalid)
    for i in invalid:
        assert any(e.startswith(f"{fields[i]}:") for e in rejected[i]), (fields[i], rejected[i])
    # Every kind of breakage is exercised somewhere at this size or the big one.
    assert truth.filter(~pl.col("is_valid"))["invalid_kind"].n_unique() >= 7


def test_stream_carries_no_truth_and_truth_covers_every_line(sim) -> None:
    keys = set()
    for line in sim.lines[:5000]:
        keys |= set(orjson.loads(line))
    assert not keys & {"person_id", "session_id", "is_valid", "invalid_kind", "preferred_hour"}
    truth = sim.truth["event_truth"]
    assert truth["person_id"].null_count() == 0
    assert truth["line"].to_list() == list(range(truth.height))
    people = sim.truth["people"]
    assert set(truth["person_id"].unique()) <= set(people["person_id"])
    assert people["preferred_hour"].is_between(0, 23).all()
    assert people["time_zone"].null_count() == 0
    tastes = np.array(people["tastes"].to_list())
    assert np.allclose(tastes.sum(axis=1), 1.0, atol=1e-4)


def test_events_of_a_session_follow_the_funnel_order(big) -> None:
    # True types and times, whether or not the line was later broken on the way.
    t = big.truth["event_truth"].filter(~pl.col("is_retry"))
    firsts = (
        t.filter(pl.col("session_id").is_not_null())
        .group_by("session_id", "event_type").agg(pl.col("true_ts").min())
        .pivot(on="event_type", index="session_id", values="true_ts")
    )
    pairs = [("page_view", "product_view"), ("checkout_start", "order_complete"),
             ("checkout_start", "payment_success"), ("payment_success", "order_complete"),
             ("add_to_cart", "checkout_start")]
    for before, after in pairs:
        both = firsts.drop_nulls([before, after])
        assert both.height > 0
        assert (both[before] <= both[after]).all(), (before, after)


def test_rates_stay_within_configured_bounds(big) -> None:
    cfg = big.config
    t = big.truth["event_truth"]
    n = t.filter(~pl.col("is_retry")).height
    counts = dict(t.filter(~pl.col("is_retry")).group_by("event_type").len().iter_rows())
    completion = counts["order_complete"] / counts["checkout_start"]
    assert abs(completion - cfg.checkout_completion_rate) < 0.05
    sessions = big.truth["sessions"].height
    assert 0.01 < counts["order_complete"] / sessions < 0.08  # e-commerce-like conversion
    devices = big.truth["devices"].filter(pl.col("shared") == "personal")
    mix = devices["kind"].value_counts(normalize=True)
    for kind, share in mix.iter_rows():
        assert abs(share - cfg.device_mix[kind]) < 0.03, kind
    invalid = (~t.filter(~pl.col("is_retry"))["is_valid"]).mean()
    assert abs(invalid - cfg.invalid_rate) < cfg.invalid_rate * 0.3
    assert abs(t["is_retry"].sum() / n - cfg.retry_rate) < cfg.retry_rate * 0.3
    late_share = t.filter(~pl.col("is_retry"))["is_late"].mean()
    assert abs(late_share - cfg.late_rate) < cfg.late_rate * 0.3
    late = t.filter(pl.col("is_late"))
    lag = (late["arrival_ts"] - late["true_ts"]).dt.total_hours()
    assert lag.min() >= 24 and lag.max() <= cfg.late_max_days * 24
    people = big.truth["people"]
    assert abs(people["registered"].mean() - cfg.register_rate) < 0.03
    skewed = big.truth["devices"].filter(pl.col("clock_skew_ms") != 0).height
    assert abs(skewed / big.truth["devices"].height - cfg.skewed_clock_rate) < 0.015


def test_hazards_show_up_in_the_identifier_truth(big) -> None:
    ids = big.truth["identifiers"].filter(pl.col("identifier_type") == "client_id")
    devices = big.truth["devices"]
    users = big.truth["device_users"]
    family = devices.filter(pl.col("shared") == "family")["client_id"]
    kiosk = devices.filter(pl.col("shared") == "kiosk")["client_id"]
    assert family.len() > 0 and kiosk.len() > 0
    per_device = users.group_by("device_id").len()
    assert per_device.join(devices.filter(pl.col("shared") == "family"), on="device_id")[
        "len"].to_list() == [2] * family.len()
    seen = dict(ids.select("value", "n_people").unique().iter_rows())
    assert max(seen.get(c, 0) for c in family) == 2
    assert max(seen.get(c, 0) for c in kiosk) > 5
    junk = ids.filter(pl.col("is_junk"))
    assert set(junk["value"]) <= {"undefined", "null", "0"}
    assert junk.filter(pl.col("value") == "undefined")["n_people"].max() > 1
    # Retries repeat the event_id of a line sent earlier; the original is in the stream too.
    t = big.truth["event_truth"]
    retried = t.filter(pl.col("is_retry"))["event_id"]
    originals = t.filter(~pl.col("is_retry") & pl.col("event_id").is_in(retried.implode()))
    assert originals.height == retried.len()


def test_push_opens_peak_at_the_preferred_hour(big) -> None:
    t = big.truth["event_truth"].filter(pl.col("is_valid") & ~pl.col("is_retry"))
    people = big.truth["people"].select("person_id", "preferred_hour_utc", "push_responsiveness")
    push = (
        t.filter(pl.col("event_type").is_in(["push_received", "push_opened"]))
        .join(people, on="person_id")
        .with_columns(d=((pl.col("true_ts").dt.hour() - pl.col("preferred_hour_utc")).abs()))
        .with_columns(d=pl.min_horizontal("d", 24 - pl.col("d")))
    )
    rate = {}
    for name, cond in (("near", pl.col("d") <= 1), ("far", pl.col("d") >= 6)):
        sub = push.filter(cond)
        rate[name] = (sub.filter(pl.col("event_type") == "push_opened").height
                      / max(sub.filter(pl.col("event_type") == "push_received").height, 1))
    assert rate["near"] > 3 * rate["far"]


def test_posting_to_a_collector_stores_valid_events_once_and_writes_sim_schema(
    collector_factory, database_url: str
) -> None:
    from simulator.truth import write_truth_tables

    s = simulate(SimConfig(visitors=60, days=7, seed=3))
    collector = collector_factory()
    write_truth_tables(s.truth, database_url, s.run_id, s.config)
    write_truth_tables(s.truth, database_url, s.run_id, s.config)  # idempotent
    accepted, rejected = post_lines(s.lines.to_list(), collector.url, collector.write_key,
                                    batch_size=500, concurrency=3, progress=False)
    t = s.truth["event_truth"]
    assert rejected == (~t["is_valid"]).sum()
    assert accepted == t["is_valid"].sum()
    valid_ids = t.filter(pl.col("is_valid"))["event_id"].unique().to_list()
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM raw.events "
            "WHERE event_id = ANY(%s::uuid[])", (valid_ids,)).fetchone()
        assert stored == (len(valid_ids), len(valid_ids))  # retries stored once
        n_truth = conn.execute("SELECT count(*) FROM sim.event_truth WHERE run_id = %s",
                               (s.run_id,)).fetchone()[0]
        assert n_truth == t.height
        n_people = conn.execute("SELECT count(*) FROM sim.people WHERE run_id = %s",
                                (s.run_id,)).fetchone()[0]
        assert n_people == 60


def _retry_then_accept(request: Request, n: int) -> tuple[int, dict[str, str], bytes]:
    """The first POST gets 503 + Retry-After: 0, the others 202. The events are not decoded
    here: a body that is not gzip still gets its 202, and the test's own decoding fails."""
    if n == 1:
        return 503, {"Retry-After": "0"}, b'{"error":"retry"}'
    return 202, {}, b'{"accepted":1,"rejected":[{"index":0,"errors":["x"]}]}'


def test_post_lines_sends_gzip_json_batches_and_retries_a_503() -> None:
    lines = simulate(SimConfig(visitors=20, days=2, seed=5)).lines.to_list()
    with recording_collector(_retry_then_accept) as (url, requests):
        accepted, rejected = post_lines(lines, url + "/", "wk_test", batch_size=100,
                                        concurrency=1, progress=False)

    batches = -(-len(lines) // 100)
    assert len(lines) > 300 and len(requests) == batches + 1  # one resent after 503
    assert (accepted, rejected) == (batches, batches)  # summed from the 202 answers
    for headers, _ in requests:
        assert headers["x-write-key"] == "wk_test"
        assert headers["content-encoding"] == "gzip"
        assert headers["content-type"] == "application/json"
    bodies = [body for _, body in requests]
    assert bodies[0] == bodies[1], "the refused batch is resent unchanged"
    sent = [event for body in bodies[1:] for event in orjson.loads(gzip.decompress(body))["batch"]]
    assert sent == [orjson.loads(line) for line in lines]  # every line once, in order
