"""Which rows the data tests read: the whole table on a full refresh, only the rows the
newest build wrote (stg_events' loaded_at stamp) on an incremental build
(dbt/macros/test_scope.sql). Checked on a real dbt build by planting a bad value in
staging, once on a row an earlier build wrote and once on one of the newest build's rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from crm.transform import TransformError
from tests.warehouse import Warehouse, ev, insert_raw_event

pytestmark = pytest.mark.slow


def plant_bad_event_type(url: str, event_id: str, days_ago: int | None = None) -> None:
    """An event_type outside accepted_values on one stored row; if `days_ago` is given, as
    if received and written there by a build that long ago (received_at and loaded_at moved
    back; else both stay, so the next build neither reloads it from raw nor takes it for an
    earlier build's row)."""
    with psycopg.connect(url) as conn:
        conn.execute("update staging.stg_events set event_type = 'bogus',"
                     " received_at = coalesce(now() - make_interval(days => %s), received_at),"
                     " loaded_at = loaded_at - coalesce(make_interval(days => %s), interval '0')"
                     " where event_id = %s", (days_ago, days_ago, event_id))


def test_incremental_build_tests_new_rows_and_full_refresh_tests_all(
        clean_warehouse: psycopg.Connection, database_url: str) -> None:
    shop = Warehouse(database_url)
    shop.ingest([ev("page_view", f"01 10:0{i}", client_id="C-1",
                    event_id=f"{i:08d}-0000-4000-8000-000000000000") for i in range(3)])
    shop.transform()
    old, recent = "00000000-0000-4000-8000-000000000000", "00000001-0000-4000-8000-000000000000"

    # Written by a build 10 days ago: not one of the newest build's rows, not re-checked.
    plant_bad_event_type(database_url, old, days_ago=10)
    shop.transform()

    # One of the newest build's rows: the incremental build's accepted_values test reads it
    # and fails.
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
