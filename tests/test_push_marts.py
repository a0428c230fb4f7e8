"""Push marts on a real PostgreSQL and dbt: a token the push service rejected is invalid in
crm.push_tokens after the next build."""

from __future__ import annotations

import psycopg

from tests.warehouse import Warehouse, ev


def test_token_rejected_by_the_push_service_is_invalid_after_the_next_build(
        clean_warehouse: psycopg.Connection, database_url: str) -> None:
    wh = Warehouse(database_url)
    token = "fcm:DEAD-TOKEN-1"
    clean_warehouse.execute("DELETE FROM push.token_invalidations WHERE push_token = %s", (token,))
    wh.ingest([ev("user_login", "01 10:00", client_id="phone-1", user_id="ACC-1",
                  device_type="android", push_token=token)])
    wh.transform()
    query = "select is_valid, invalid_reason from crm.push_tokens where push_token = %s"
    assert wh.rows(query, token) == [(True, None)]
    clean_warehouse.execute(
        "INSERT INTO push.token_invalidations (push_token, service, reason)"
        " VALUES (%s, 'fcm', 'UNREGISTERED')", (token,))
    assert wh.rows(query, token) == [(True, None)]  # until the next build
    wh.transform()
    assert wh.rows(query, token) == [(False, "rejected_by_push_service")]


def test_push_events_accept_a_delivery_id_and_name_a_bad_one() -> None:
    import datetime as dt
    import uuid

    from collector.validation import validate_events

    now = dt.datetime.now(dt.UTC)
    base = {"event": "push_opened", "timestamp": now.isoformat(), "client_id": "c-1",
            "device_type": "android", "push_token": "fcm:TOKEN-OK-1"}
    good, bad = validate_events([{**base, "delivery_id": str(uuid.uuid4())},
                                 {**base, "delivery_id": "not-a-uuid"}], now)
    assert len(good) == 1 and len(bad) == 1
    assert "delivery_id" in str(bad[0])
