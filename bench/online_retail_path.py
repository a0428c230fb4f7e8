"""The real Online Retail sample through the whole path: import -> dbt -> train.

    .venv/bin/python bench/online_retail_path.py                      # the shared sample
    .venv/bin/python bench/online_retail_path.py --data export.csv    # your own export

On a fresh database (an embedded PostgreSQL in a temporary folder unless `--database-url`
names one, whose raw, dbt and ml schemas are then emptied first) and a fresh MLflow store
(a temporary SQLite file), it runs the importer (`crm import online-retail`), the dbt
project (`crm transform --full-refresh`) and every model (`crm train`), and prints each
stage's time, the recommendation model against popularity on its time holdout, the
lifecycle holdout against its baseline and the segment sizes: whatever they show. The last
line is `RESULT ...` with the figures.

`--invoices N` keeps the first N kept invoices by time (the importer's own mapping,
then a cut), for a quicker run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_database  # noqa: E402
from crm.importers import ImportPlan, load  # noqa: E402
from crm.importers.online_retail import online_retail_events  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "online_retail_sample.csv"
# What a fresh run must not inherit from an earlier one on the same database.
FRESH_SCHEMAS = ("staging", "intermediate", "crm", "ml")


@dataclass
class PathResult:
    """What the run produced: stage times, model reports and the ml tables' sizes."""

    stage_seconds: dict[str, float] = field(default_factory=dict)
    events: int = 0
    accepted: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    reports: dict[str, object] = field(default_factory=dict)  # model -> ml.train.ModelReport
    table_rows: dict[str, int] = field(default_factory=dict)
    segment_sizes: dict[str, int] = field(default_factory=dict)
    buyers: int = 0
    products: int = 0


def first_invoices(plan: ImportPlan, n: int | None) -> ImportPlan:
    """The first `n` invoices by time (the plan is already in time order)."""
    if n is None:
        return plan
    if n < 1:
        raise ValueError(f"--invoices must be at least 1, got {n}")
    return ImportPlan(plan.source, plan.events[:n], plan.rows_read, plan.skipped)


def fresh_database(url: str) -> None:
    """Empty raw.events and drop what dbt and the models built: a run starts from nothing."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE raw.events, raw.rejected_events")
        for schema in FRESH_SCHEMAS:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def run_path(database_url: str, data: Path = DEFAULT_DATA, invoices: int | None = None,
             seed: int = 7) -> PathResult:
    """Import `data`, build the marts and train every model on `database_url` (emptied
    first); MLflow goes wherever MLFLOW_TRACKING_URI points."""
    from crm.db.migrate import migrate
    from crm.transform import transform
    from ml.train import train

    out = PathResult()
    migrate(database_url)
    fresh_database(database_url)

    t = time.perf_counter()
    plan = first_invoices(online_retail_events(data), invoices)
    loaded = load(plan, database_url, progress=False)
    out.stage_seconds["import"] = time.perf_counter() - t
    out.events, out.accepted, out.skipped = len(plan.events), loaded.accepted, plan.skipped
    if loaded.rejected:
        raise RuntimeError(f"{loaded.rejected} imported event(s) rejected by validation")

    t = time.perf_counter()
    transform(full_refresh=True, database_url=database_url, quiet=True)
    out.stage_seconds["transform"] = time.perf_counter() - t

    t = time.perf_counter()
    for report in train(database_url, seed=seed):
        out.reports[report.model] = report
    out.stage_seconds["train"] = time.perf_counter() - t

    with psycopg.connect(database_url) as conn:
        for table in ("user_lifecycle", "user_segments", "user_recommendations",
                      "user_send_windows", "user_recommendation"):
            out.table_rows[table] = conn.execute(f"SELECT count(*) FROM ml.{table}").fetchone()[0]
        out.segment_sizes = dict(conn.execute(
            "SELECT segment, count(*) FROM ml.user_segments GROUP BY 1 ORDER BY 2 DESC, 1"
        ).fetchall())
        out.buyers = conn.execute(
            "SELECT count(DISTINCT user_id) FROM crm.purchase_history").fetchone()[0]
        out.products = conn.execute("SELECT count(*) FROM crm.dim_products").fetchone()[0]
    return out


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in values.items()) or "-"


def show(out: PathResult) -> str:
    """Print the run; return the RESULT line."""
    print(f"events {out.events:,} (accepted {out.accepted:,}); skipped {out.skipped}")
    print(f"buyers {out.buyers:,}, products {out.products:,}")
    print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in out.stage_seconds.items()))
    for name, r in out.reports.items():
        print(f"{name:10s} v{r.version}: model [{_fmt(r.metrics)}]  baseline [{_fmt(r.baseline)}]"
              + (f"  ({r.message})" if r.message else ""))
    print("ml rows: " + ", ".join(f"{k} {v:,}" for k, v in out.table_rows.items()))
    print("segments: " + ", ".join(f"{k} {v:,}" for k, v in out.segment_sizes.items()))
    rec, life = out.reports["recs"], out.reports["lifecycle"]
    nan = float("nan")
    return (
        "RESULT "
        f"import_s={out.stage_seconds['import']:.1f} "
        f"transform_s={out.stage_seconds['transform']:.1f} "
        f"train_s={out.stage_seconds['train']:.1f} "
        f"precision_at_10={rec.metrics.get('precision_at_10', nan):.4f} "
        f"popularity_precision_at_10={rec.baseline.get('precision_at_10', nan):.4f} "
        f"recall_at_10={rec.metrics.get('recall_at_10', nan):.4f} "
        f"popularity_recall_at_10={rec.baseline.get('recall_at_10', nan):.4f} "
        f"lifecycle_mae={life.metrics.get('holdout_mae', nan):.4f} "
        f"baseline_mae={life.baseline.get('holdout_mae', nan):.4f} "
        f"segments={len(out.segment_sizes)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Online Retail CSV")
    ap.add_argument("--invoices", type=int, default=None, help="first N invoices only")
    ap.add_argument("--database-url", default=None,
                    help="a database to use (emptied first); default a temporary server")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"no Online Retail file at {args.data} (use --data PATH)")

    with tempfile.TemporaryDirectory(prefix="crm-online-retail-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        os.environ.setdefault("CRM_DBT_TARGET_PATH", str(Path(tmp) / "dbt-target"))
        os.environ.setdefault("CRM_DBT_LOG_PATH", str(Path(tmp) / "dbt-logs"))
        t = time.perf_counter()
        with scratch_database(Path(tmp), args.database_url) as url:
            print(f"database ready in {time.perf_counter() - t:.1f} s")
            out = run_path(url, args.data, args.invoices, args.seed)
    print(show(out))


if __name__ == "__main__":
    main()
