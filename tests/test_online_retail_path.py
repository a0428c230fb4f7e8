"""The real Online Retail sample through the whole path (import, dbt, train) on a fresh
database: every output is there and typed, and each model is compared with its baseline on
the same holdout (who wins is a measurement recorded in bench/RESULTS.md, not asserted)."""

from __future__ import annotations

import math

import psycopg
import pytest

from bench.online_retail_path import DEFAULT_DATA, PathResult, first_invoices, run_path, show
from crm.importers.online_retail import online_retail_events

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def path_run(database_url: str, mlflow_store: str) -> PathResult:
    assert DEFAULT_DATA.is_file(), f"the shared Online Retail sample is missing: {DEFAULT_DATA}"
    return run_path(database_url, DEFAULT_DATA)


def test_every_imported_invoice_reaches_the_marts(path_run: PathResult, database_url: str):
    assert path_run.events == path_run.accepted > 0
    assert path_run.skipped["cancelled_invoices"] > 0  # the sample has cancellations
    with psycopg.connect(database_url) as conn:
        orders = conn.execute("SELECT count(DISTINCT order_id) FROM crm.purchase_history "
                              ).fetchone()[0]
    assert orders == path_run.events
    assert set(path_run.stage_seconds) == {"import", "transform", "train"}
    assert all(s > 0 for s in path_run.stage_seconds.values())


def test_every_model_ran_and_wrote_typed_rows(path_run: PathResult, database_url: str):
    assert set(path_run.reports) == {"lifecycle", "segments", "recs", "send-time"}
    for report in path_run.reports.values():
        # A model was fitted and registered (not the baseline-only path) on real data.
        assert report.version not in ("baseline", "popularity", "rules"), report
    assert path_run.table_rows["user_lifecycle"] == path_run.buyers
    with psycopg.connect(database_url) as conn:
        types = dict(conn.execute(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'ml'").fetchall())
        versions = conn.execute(
            "SELECT DISTINCT model_version FROM ml.user_recommendations").fetchall()
        bought_again = conn.execute(
            "SELECT count(*) FROM ml.user_recommendations r JOIN crm.purchase_history h "
            "ON h.user_id::text = r.user_id CROSS JOIN LATERAL jsonb_array_elements("
            "h.order_items) item WHERE item ->> 'product_id' = r.product_id").fetchone()[0]
    assert types["user_lifecycle.p_active"] == "double precision"
    assert types["user_lifecycle.expected_value_12m"] == "double precision"
    assert types["user_recommendations.rank"] == "bigint"
    assert types["user_send_windows.best_local_hour"] == "bigint"
    assert types["user_segments.segment"] == "text"
    assert versions == [("recs-v1",)]
    assert bought_again == 0  # nobody is shown what they already bought
    assert sum(path_run.segment_sizes.values()) == path_run.table_rows["user_segments"]


def test_models_are_compared_with_their_baselines(path_run: PathResult):
    recs, life = path_run.reports["recs"], path_run.reports["lifecycle"]
    for key in ("precision_at_10", "recall_at_10", "auc", "coverage"):
        assert math.isfinite(recs.metrics[key]) and math.isfinite(recs.baseline[key]), key
    # Both sides are scored on the same people of the same holdout.
    assert recs.metrics["evaluated_people"] == recs.baseline["evaluated_people"] > 0
    assert life.metrics["holdout_actual"] > 0
    assert life.metrics["holdout_mae"] > 0 and life.baseline["holdout_mae"] > 0
    line = show(path_run)
    assert line.startswith("RESULT ") and "nan" not in line
    fields = dict(kv.split("=") for kv in line.split()[1:])
    assert float(fields["popularity_precision_at_10"]) == pytest.approx(
        recs.baseline["precision_at_10"], abs=5e-5)


def test_a_subset_keeps_the_first_invoices_and_refuses_nonsense():
    plan = online_retail_events(DEFAULT_DATA)
    first = first_invoices(plan, 10)
    assert first.events == plan.events[:10]
    assert [e["timestamp"] for e in first.events] == sorted(e["timestamp"] for e in first.events)
    with pytest.raises(ValueError, match="--invoices must be at least 1"):
        first_invoices(plan, 0)
