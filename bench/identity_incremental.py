"""How fast are incremental identity runs? Simulates about a million events (11,000 visitors x
30 days), loads 99 % of them (in arrival order) through the collector's ingest path into an
embedded PostgreSQL, runs a full `dbt build` of the identity part (staging,
intermediate/identity, marts/identity, with their tests), then:

  1. an incremental build with nothing new,
  2. the last 1 % of the stream (the newest events plus the late ones arriving with them),
     received now, and an incremental build,

printing wall time and the slowest models of each run from dbt's run_results.json. --verify
then runs a full refresh on the same data and checks that the incremental runs left the
identity tables (and int_event_person) identical.

    .venv/bin/python bench/identity_incremental.py                       # ~1M events, seed 3
    .venv/bin/python bench/identity_incremental.py --all --verify         # the whole project
    .venv/bin/python bench/identity_incremental.py --workdir /tmp/idb     # keep the database:
        # a second call with the same --workdir skips simulating and loading (the increment
        # is put aside in bench_increment and re-received on every call)

Each build uses its own dbt target path (env CRM_DBT_TARGET_PATH) under the work directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.transform_bench import verify_full_refresh  # noqa: E402  (one definition for both)

IDENTITY_SELECT = ["staging", "intermediate.identity", "marts.identity", "+stg_events"]

# Tables whose rows must not depend on how the runs were split.
COMPARED = {
    "stg_events": "select * from staging.stg_events",
    "int_event_person": "select * from intermediate.int_event_person",
    "users": "select * from crm.users",
    "client_ids": "select * from crm.client_ids",
    "push_tokens": "select * from crm.push_tokens",
    "public_devices": "select * from crm.public_devices",
    "user_id_history": "select * from crm.user_id_history",
}
COMPARED_ALL = {
    "fct_sessions": "select * from crm.fct_sessions",
    "visit_history": "select * from crm.visit_history",
    "purchase_history": "select * from crm.purchase_history",
    "user_features": "select * from crm.user_features",
}


def node_times(target: Path) -> list[tuple[str, float, str]]:
    """(node, seconds, status) of every node of the last run, slowest first."""
    data = json.loads((target / "run_results.json").read_text())
    out = []
    for r in data["results"]:
        uid: str = r["unique_id"]
        kind = uid.split(".")[0]
        name = uid.split(".")[2] if kind == "test" else uid.split(".")[-1]
        out.append((f"{kind}:{name}", float(r["execution_time"]), str(r["status"])))
    return sorted(out, key=lambda t: -t[1])


def build(url: str, work: Path, label: str, full_refresh: bool, everything: bool,
          top: int) -> float:
    from crm.transform import failed_nodes, run_dbt

    target = work / f"target-{label}"
    os.environ["CRM_DBT_TARGET_PATH"] = str(target)
    args = ["build"] + (["--full-refresh"] if full_refresh else [])
    if not everything:
        # cautious: not the sessions models' tests that merely reference crm.users
        args += ["--select", *IDENTITY_SELECT, "--indirect-selection", "cautious"]
    t0 = time.perf_counter()
    result = run_dbt(args, database_url=url)
    seconds = time.perf_counter() - t0
    failed = failed_nodes(result) if result.result is not None else []
    if not result.success or failed:
        raise SystemExit(f"{label}: dbt build failed: {failed or result.exception}")
    times = node_times(target)
    models = sum(t for n, t, _ in times if n.startswith("model:"))
    tests = sum(t for n, t, _ in times if n.startswith(("test:", "unit_test:")))
    print(f"{label}: {seconds:.1f} s wall ({len(times)} nodes; models {models:.1f} s, "
          f"tests {tests:.1f} s)")
    for name, t, _status in times[:top]:
        print(f"    {name:<52} {t:7.2f} s")
    return seconds


def setup(url: str, args: argparse.Namespace) -> None:
    """Simulate, load the first 99 % into raw.events, keep the rest in bench_increment."""
    from collector.ingest import ingest_items
    from simulator import SimConfig, simulate

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE raw.events, raw.rejected_events")
        conn.execute("DROP TABLE IF EXISTS public.bench_increment")
        for schema in ("staging", "intermediate", "crm"):
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    t0 = time.perf_counter()
    sim = simulate(SimConfig(visitors=args.visitors, days=args.days, seed=args.seed))
    items: list[Any] = [orjson.loads(line) for line in sim.lines]
    n_inc = int(len(items) * args.increment)
    print(f"simulated {len(items):,} events ({args.visitors:,} visitors x {args.days} days, "
          f"seed {args.seed}) in {time.perf_counter() - t0:.1f} s; increment {n_inc:,}")
    for label, chunk in (("base", items[: len(items) - n_inc]),
                         ("increment", items[len(items) - n_inc:])):
        t0 = time.perf_counter()
        s = ingest_items(chunk, database_url=url, source=f"ingest:{label}", progress=False)
        print(f"ingest {label}: {s.accepted:,} accepted, {s.rejected:,} rejected in "
              f"{time.perf_counter() - t0:.1f} s")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.bench_increment AS "
                     "SELECT * FROM raw.events WHERE source = 'ingest:increment'")
        conn.execute("DELETE FROM raw.events WHERE source = 'ingest:increment'")
        conn.execute("VACUUM ANALYZE raw.events")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visitors", type=int, default=11_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--increment", type=float, default=0.01, help="share of events added last")
    ap.add_argument("--top", type=int, default=8, help="nodes listed per run")
    ap.add_argument("--all", action="store_true", dest="everything",
                    help="build the whole project (sessions too), not only identity")
    ap.add_argument("--verify", action="store_true",
                    help="full refresh at the end and compare with the incremental runs")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the database here and reuse it on the next call")
    args = ap.parse_args(argv)

    from crm.db.embedded import EmbeddedPostgres
    from crm.db.migrate import migrate

    work = args.workdir or Path(tempfile.mkdtemp(prefix="crm-identity-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["CRM_DBT_LOG_PATH"] = str(work / "logs")
    os.environ.setdefault("DBT_QUIET", "true")
    server = EmbeddedPostgres(work / "pgdata")
    try:
        url = server.start()
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            loaded = conn.execute(
                "SELECT to_regclass('public.bench_increment') IS NOT NULL").fetchone()[0]
        if not loaded:
            setup(url, args)
        else:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DELETE FROM raw.events WHERE source = 'ingest:increment'")
                n = conn.execute("SELECT count(*) FROM raw.events").fetchone()[0]
            print(f"reusing {work}: {n:,} events loaded")

        build(url, work, "full refresh", True, args.everything, args.top)
        build(url, work, "incremental, nothing new", False, args.everything, args.top)
        with psycopg.connect(url, autocommit=True) as conn:
            n = conn.execute(
                "INSERT INTO raw.events (event_id, event_type, event_ts, received_at, client_id, "
                "user_id, device_type, push_token, email, phone, source, payload, received_day) "
                "SELECT event_id, event_type, event_ts, t, client_id, user_id, device_type, "
                "push_token, email, phone, source, payload, (t AT TIME ZONE 'UTC')::date "
                "FROM (SELECT *, clock_timestamp() AS t FROM public.bench_increment) i"
            ).rowcount
        print(f"received {n:,} more events")
        build(url, work, f"incremental after +{args.increment:.0%}", False, args.everything,
              args.top)

        if args.verify:
            compared = COMPARED | (COMPARED_ALL if args.everything else {})
            rebuild = lambda: build(url, work, "verify: full refresh", True, args.everything, 0)  # noqa: E731
            if not verify_full_refresh(url, compared, rebuild):
                sys.exit(1)
    finally:
        if args.workdir is None:
            server.stop(mode="immediate")
            shutil.rmtree(work, ignore_errors=True)
        else:
            server.stop()


if __name__ == "__main__":
    main()
