"""How well does identity resolution find the people behind the events? Measured against the
simulator's hidden truth, with every hazard on (family devices, kiosks, junk ids, retries, late
and skewed events, invalid events).

    .venv/bin/python bench/identity_quality.py                      # 5,000 visitors, 30 days
    .venv/bin/python bench/identity_quality.py --visitors 11000 --incremental-share 0.01

Metrics are pairwise over events: every pair of (accepted, deduplicated) events is "same
person" or not, in the truth and in int_event_person. precision = predicted same-person pairs
that are true; recall = true same-person pairs that were found. Events with no usable
identifier count as their own singleton person.

Some true pairs cannot be found by any deterministic stitching: a visitor who never logs in
and uses two devices that never share an e-mail, phone or token. `recall_linkable` is recall
over the pairs the data itself connects (the two events are joined by a chain of identifiers
from that person's own events); `recall_ceiling` is the share of true pairs that are
linkable at all. Without an argument, a throw-away embedded PostgreSQL is used: the
benchmark empties raw.events, so point --database-url only at a scratch database.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import polars as pl
import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_database  # noqa: E402


@dataclass
class Quality:
    events: int
    true_people: int
    predicted_people: int
    precision: float
    recall: float
    recall_linkable: float
    recall_ceiling: float
    unidentified_events: int


def _pairs(counts: pl.Series) -> float:
    c = counts.cast(pl.Float64)
    return float((c * (c - 1) / 2).sum())


def measure_quality(database_url: str, event_truth: pl.DataFrame) -> Quality:
    """Pairwise precision / recall of intermediate.int_event_person against the truth
    (`sim.truth["event_truth"]`: event_id, person_id)."""
    truth = event_truth.select("event_id", "person_id").unique("event_id")
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TEMP TABLE q_truth (event_id uuid PRIMARY KEY, person_id text)")
        with conn.cursor().copy("COPY q_truth FROM STDIN (FORMAT csv)") as copy:
            copy.write(truth.write_csv(include_header=False))
        conn.execute("ANALYZE q_truth")
        # The person's own identifier graph: which of its events the data can connect.
        conn.execute("""
            CREATE TEMP TABLE q_ids AS
            SELECT e.event_id, t.person_id,
                   array_remove(ARRAY['account:' || e.user_id, 'client_id:' || e.client_id,
                                      'email:' || e.email, 'phone:' || e.phone,
                                      'push_token:' || e.push_token], NULL) AS ids
            FROM staging.stg_events e JOIN q_truth t USING (event_id)""")
        conn.execute("""
            CREATE TEMP TABLE q_cc AS
            SELECT * FROM intermediate.connected_components(
                ARRAY(SELECT DISTINCT person_id || '|' || ids[1] FROM q_ids
                      WHERE cardinality(ids) > 0),
                ARRAY(SELECT person_id || '|' || ids[1] FROM q_ids, generate_subscripts(ids, 1) k
                      WHERE k > 1),
                ARRAY(SELECT person_id || '|' || ids[k] FROM q_ids, generate_subscripts(ids, 1) k
                      WHERE k > 1))""")
        rows = conn.execute("""
            SELECT i.event_id::text, i.person_id, p.user_id::text,
                   coalesce(c.component, 'event:' || i.event_id::text)
            FROM q_ids i
            JOIN intermediate.int_event_person p USING (event_id)
            LEFT JOIN q_cc c ON c.node = i.person_id || '|' || i.ids[1]""").fetchall()
    df = pl.DataFrame(rows, schema=["event_id", "person_id", "user_id", "linkable"],
                      orient="row")
    unidentified = df["user_id"].null_count()
    df = df.with_columns(user_id=pl.coalesce("user_id", pl.lit("event:") + pl.col("event_id")))
    true_pairs = _pairs(df.group_by("person_id").len()["len"])
    predicted_pairs = _pairs(df.group_by("user_id").len()["len"])
    both = _pairs(df.group_by("person_id", "user_id").len()["len"])
    linkable_pairs = _pairs(df.group_by("person_id", "linkable").len()["len"])
    linkable_found = _pairs(df.group_by("person_id", "linkable", "user_id").len()["len"])
    return Quality(
        events=df.height,
        true_people=df["person_id"].n_unique(),
        predicted_people=df.filter(~pl.col("user_id").str.starts_with("event:"))["user_id"]
        .n_unique(),
        precision=both / predicted_pairs if predicted_pairs else 1.0,
        recall=both / true_pairs if true_pairs else 1.0,
        recall_linkable=linkable_found / linkable_pairs if linkable_pairs else 1.0,
        recall_ceiling=linkable_pairs / true_pairs if true_pairs else 1.0,
        unidentified_events=unidentified,
    )


def reset_database(database_url: str) -> None:
    """Empty raw events and drop everything dbt built (a scratch database only!)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE raw.events, raw.rejected_events")
        for schema in ("staging", "intermediate", "crm"):
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--incremental-share", type=float, default=0.01,
                        help="Share of events (the last to arrive) loaded after the full "
                             "build, to time an incremental run.")
    parser.add_argument("--database-url", default=None,
                        help="A scratch database (it is emptied). Default: a temporary "
                             "embedded PostgreSQL.")
    args = parser.parse_args(argv)
    os.environ.setdefault("DBT_QUIET", "true")  # dbt's per-node log would bury the report

    from collector.ingest import ingest_items
    from crm.transform import transform
    from simulator import SimConfig, simulate

    with tempfile.TemporaryDirectory(prefix="identity-bench-") as tmp, \
            scratch_database(Path(tmp), args.database_url) as url:
        reset_database(url)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        sim = simulate(SimConfig(visitors=args.visitors, days=args.days, seed=args.seed))
        timings["simulate_s"] = time.perf_counter() - t
        lines = sim.lines.to_list()
        cut = len(lines) - int(len(lines) * args.incremental_share)

        t = time.perf_counter()
        first = ingest_items((orjson.loads(x) for x in lines[:cut]), database_url=url,
                             source="ingest:bench", progress=False)
        timings["ingest_s"] = time.perf_counter() - t
        t = time.perf_counter()
        transform(full_refresh=True, database_url=url)
        timings["full_build_s"] = time.perf_counter() - t

        accepted = first.accepted
        if cut < len(lines):
            rest = ingest_items((orjson.loads(x) for x in lines[cut:]), database_url=url,
                                source="ingest:bench", progress=False)
            accepted += rest.accepted
            t = time.perf_counter()
            transform(database_url=url)
            timings["incremental_build_s"] = time.perf_counter() - t

        quality = measure_quality(url, sim.truth["event_truth"])
        report = {
            "config": {"visitors": args.visitors, "days": args.days, "seed": args.seed,
                       "incremental_share": args.incremental_share},
            "events_accepted": accepted,
            "timings": {k: round(v, 1) for k, v in timings.items()},
            "quality": {k: round(v, 5) if isinstance(v, float) else v
                        for k, v in asdict(quality).items()},
        }
        print(json.dumps(report, indent=2))
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
