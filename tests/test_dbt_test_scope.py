"""Which rows the data tests read: the whole table on a full refresh, only the rows the
build just wrote (received within lookback_days of the newest) on an incremental build
(dbt/macros/test_scope.sql). Checked on a real dbt build by planting a bad value in
staging, once outside and once inside the incremental window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from crm.transform import TransformError
from tests.warehouse import Warehouse, ev, insert_raw_event

pytestmark = pytest.mark.slow


def plant_bad_event_type(url: str, event_id: str, days_ago: int | None = None) -> None:
    """An event_type outside accepted_values on one stored row; moved to `days_ago` ago if
    given (else it keeps its received_at, so the next build does not reload it from raw)."""
    with psycopg.connect(url) as conn:
        conn.execute("update staging.stg_events set event_type = 'bogus', received_at ="
                     " coalesce(now() - make_interval(days => %s), received_at)"
                     " where event_id = %s", (days_ago, event_id))


def test_incremental_build_tests_new_rows_and_full_refresh_tests_all(
        clean_warehouse: psycopg.Connection, database_url: str) -> None:
    shop = Warehouse(database_url)
    shop.ingest([ev("page_view", f"01 10:0{i}", client_id="C-1",
                    event_id=f"{i:08d}-0000-4000-8000-000000000000") for i in range(3)])
    shop.transform()
    old, recent = "00000000-0000-4000-8000-000000000000", "00000001-0000-4000-8000-000000000000"

    # Received 10 days ago (lookback is 3): written by an earlier build, not re-checked.
    plant_bad_event_type(database_url, old, days_ago=10)
    shop.transform()

    # Inside the window: the incremental build's accepted_values test reads it and fails.
    plant_bad_event_type(database_url, recent)
    with pytest.raises(TransformError) as failed:
        shop.transform()
    assert any("accepted_values_stg_events_event_type" in n for n in failed.value.failed_nodes)

    # A bad row received 10 days before the others, straight into raw.events: incremental
    # builds never re-read it, a full refresh loads it and its tests read every row.
    plant_bad_event_type(database_url, recent, days_ago=10)
    with psycopg.connect(database_url) as conn:
        insert_raw_event(conn, "bogus", "A-1", datetime.now(UTC) - timedelta(days=10))
    shop.transform()
    with pytest.raises(TransformError) as failed:
        shop.transform(full_refresh=True)
    assert any("accepted_values_stg_events_event_type" in n for n in failed.value.failed_nodes)
