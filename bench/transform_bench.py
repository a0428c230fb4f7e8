"""How long does the whole dbt project take on a month of a mid-sized shop? Simulates about a
million events, loads them through the collector's ingest path into a fresh database, then
times `dbt build --full-refresh` (what `crm transform --full-refresh` runs) and an incremental
`dbt build` after 1 % more events arrive, with per-model times from dbt's run_results.json.

    .venv/bin/python bench/transform_bench.py                         # 10,500 visitors x 30 days
    .venv/bin/python bench/transform_bench.py --visitors 1000 --verify
    .venv/bin/python bench/transform_bench.py --days 150 --increment-events 9531 --verify

--days 150 is the same shop (10,500 people) over five times the history, about 4 M events;
--increment-events first adds a fixed number of events (the 1 M run's 1 %), timed on its
own, before the --increment share, so both "the same new data on a longer history" and "1 %
of it" are measured in one run.

The stream is split in arrival order: the first 99 % is the initial load, the last 1 % the
increment (the newest events plus the late ones that arrive with them), so the incremental run
sees what a nightly run sees. --verify then runs a full refresh on the same data and checks
that the incremental run left the marts identical. Without --database-url a throw-away
embedded PostgreSQL is used (the benchmark empties raw.events: never point it at real data).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_database  # noqa: E402

# Marts whose rows must not depend on how the runs were split.
COMPARED = {
    "fct_sessions": "select * from crm.fct_sessions",
    "visit_history": "select * from crm.visit_history",
    "purchase_history": "select * from crm.purchase_history",
    "user_features": "select * from crm.user_features",
    "dim_products": "select * from crm.dim_products",
    "users": "select * from crm.users",
}


def table_digest(conn: psycopg.Connection, sql: str) -> tuple[int, str]:
    """Row count and an order-independent md5 of the rows' text."""
    row = conn.execute(
        f"select count(*), md5(coalesce(string_agg(r::text, '|' order by r::text), '')) "
        f"from ({sql}) as r"
    ).fetchone()
    return int(row[0]), str(row[1])


def model_times(target: Path) -> list[tuple[str, float, str]]:
    """(model name, seconds, status) of every model in the last run, slowest first."""
    data = json.loads((target / "run_results.json").read_text())
    out = []
    for r in data["results"]:
        uid: str = r["unique_id"]
        if uid.startswith(("model.", "seed.")):
            out.append((uid.split(".")[-1], float(r["execution_time"]), str(r["status"])))
    return sorted(out, key=lambda t: -t[1])


def test_times(target: Path, kind: str = "test.") -> list[tuple[str, float]]:
    """(data test name, seconds) of every test in the last run, slowest first: `dbt build`
    runs every test on each build, so their share is part of what an increment costs.
    kind "unit_test." gives the unit tests instead."""
    data = json.loads((target / "run_results.json").read_text())
    # test.<project>.<name>.<hash>; unit_test.<project>.<model>.<name>
    part = 2 if kind == "test." else -1
    out = [(str(r["unique_id"]).split(".")[part], float(r["execution_time"]))
           for r in data["results"] if str(r["unique_id"]).startswith(kind)]
    return sorted(out, key=lambda t: -t[1])


def verify_full_refresh(url: str, compared: dict[str, str], rebuild: Callable[[], Any]) -> bool:
    """Digest the tables an incremental run left, rebuild with --full-refresh, compare."""
    with psycopg.connect(url) as conn:
        before = {k: table_digest(conn, q) for k, q in compared.items()}
    rebuild()
    with psycopg.connect(url) as conn:
        after = {k: table_digest(conn, q) for k, q in compared.items()}
    for k in compared:
        same = "identical" if before[k] == after[k] else "DIFFERENT"
        print(f"verify {k}: {before[k][0]:,} rows, incremental vs full refresh {same}")
    return before == after


def build(database_url: str, target: Path, full_refresh: bool) -> tuple[float, Any]:
    from crm.transform import transform

    t0 = time.perf_counter()
    result = transform(full_refresh=full_refresh, database_url=database_url)
    return time.perf_counter() - t0, result


def report(title: str, seconds: float, target: Path, top: int) -> None:
    times = model_times(target)
    total_models = sum(t for _, t, _ in times)
    tests = test_times(target)
    total_tests = sum(t for _, t in tests)
    units = test_times(target, "unit_test.")
    print(f"{title}: {seconds:.1f} s wall (models {total_models:.1f} s, "
          f"{len(tests)} tests {total_tests:.1f} s, {len(units)} unit tests "
          f"{sum(t for _, t in units):.1f} s; summed over threads)")
    for name, t, _status in times[:top]:
        print(f"    {name:<28} {t:7.2f} s")
    for name, t in tests[: max(top // 2, 1)]:
        print(f"    test {name[:60]:<60} {t:6.2f} s")


def ingest(database_url: str, lines: list[str], label: str) -> None:
    from collector.ingest import ingest_items

    t0 = time.perf_counter()
    s = ingest_items((orjson.loads(line) for line in lines), database_url=database_url,
                     source=f"ingest:{label}", progress=False)
    dt = time.perf_counter() - t0
    print(f"ingest {label}: {s.accepted:,} accepted, {s.rejected:,} rejected in {dt:.1f} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visitors", type=int, default=10_500)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--increment", type=float, default=0.01, help="share of events added last")
    ap.add_argument("--increment-events", type=int, default=0,
                    help="a fixed number of events added (and timed) before the --increment share")
    ap.add_argument("--top", type=int, default=8, help="models listed per run")
    ap.add_argument("--verify", action="store_true",
                    help="full refresh at the end and compare the marts with the incremental run")
    ap.add_argument("--database-url", default=None, help="a scratch database (emptied!)")
    args = ap.parse_args(argv)

    from simulator import SimConfig, simulate

    work = Path(tempfile.mkdtemp(prefix="crm-transform-bench-"))
    os.environ["CRM_DBT_TARGET_PATH"] = str(work / "target")
    os.environ["CRM_DBT_LOG_PATH"] = str(work / "logs")
    os.environ.setdefault("DBT_QUIET", "true")  # errors only; timings come from run_results
    try:
        with scratch_database(work, args.database_url) as url:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("TRUNCATE raw.events, raw.rejected_events")
                for schema in ("staging", "intermediate", "crm"):
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

            t0 = time.perf_counter()
            sim = simulate(SimConfig(visitors=args.visitors, days=args.days, seed=args.seed))
            # Parsed as ingested (a generator per slice): 5 M parsed events at once would
            # take several GB.
            items = sim.lines.to_list()
            n_inc = int(len(items) * args.increment)
            n_fixed = args.increment_events
            print(f"simulated {len(items):,} events ({args.visitors:,} visitors x "
                  f"{args.days} days) in {time.perf_counter() - t0:.1f} s; increments "
                  f"{n_fixed:,} + {n_inc:,}")
            base_end = len(items) - n_inc - n_fixed
            ingest(url, items[:base_end], "base")

            target = work / "target"
            full_s, _ = build(url, target, full_refresh=True)
            report("full refresh (dbt build --full-refresh)", full_s, target, args.top)
            print(f"FULL_REFRESH events={base_end:,} full_s={full_s:.1f} "
                  f"us_per_event={full_s / max(base_end, 1) * 1e6:.1f}")

            increments = [(f"+{n_fixed:,} events", items[base_end:base_end + n_fixed])] \
                if n_fixed else []
            increments.append((f"+{args.increment:.0%}", items[len(items) - n_inc:]))
            for label, batch in increments:
                ingest(url, batch, "increment")
                inc_s, _ = build(url, target, full_refresh=False)
                report(f"incremental (dbt build) after {label}", inc_s, target, args.top)
                # A ratio measured in one run, so a busy machine slows both sides.
                print(f"RATIO incremental/full_refresh={inc_s / full_s:.3f} (target <= 0.200)"
                      f" increment={len(batch):,} events={len(items):,} full_s={full_s:.1f}"
                      f" inc_s={inc_s:.1f}")

            with psycopg.connect(url) as conn:
                n_sessions = conn.execute("select count(*) from crm.fct_sessions").fetchone()[0]
                n_events = conn.execute("select count(*) from staging.stg_events").fetchone()[0]
            print(f"stg_events {n_events:,} rows, fct_sessions {n_sessions:,} rows "
                  f"(simulator truth: {sim.truth['sessions'].height:,} sessions)")

            if args.verify and not verify_full_refresh(
                url, COMPARED, lambda: build(url, target, full_refresh=True)
            ):
                sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
