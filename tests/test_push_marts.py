"""Push marts on a real PostgreSQL and dbt: a token the push service rejected is invalid in
crm.push_tokens after the next build."""

from __future__ import annotations

import psycopg

from tests.warehouse import Warehouse, ev, person_id


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


CAMPAIGN = "mart_stats_test"
# (name, run, status, reason): the ledger rows of the scenario below
LEDGER = [
    ("a", "r1", "sent", None), ("b", "r1", "sent", None), ("c", "r1", "sent", None),
    ("d", "r1", "failed", "no_sender:apns"), ("e", "r1", "skipped", "cap_day"),
    ("f", "r1", "skipped", "opted_out"), ("g", "r2", "sent", None),
]


def _ledger(conn: psycopg.Connection) -> dict[str, str]:
    """The scenario's push.deliveries rows (r1 sent on 1 September, r2 on the 2nd, 10:00
    UTC); returns name -> delivery id."""
    conn.execute("DELETE FROM push.deliveries WHERE campaign = %s", (CAMPAIGN,))
    ids = {}
    for name, run, status, reason in LEDGER:
        at = "2026-09-01 10:00+00" if run == "r1" else "2026-09-02 10:00+00"
        ids[name] = str(conn.execute(
            """INSERT INTO push.deliveries (campaign, run_id, person_id, channel, push_token,
                   send_at, expires_at, title, body, status, reason, finished_at)
               VALUES (%s, %s, %s, 'fcm', %s, %s, %s::timestamptz + interval '1 day', 't',
                       'b', %s, %s, CASE WHEN %s = 'planned' THEN NULL ELSE %s::timestamptz END)
               RETURNING delivery_id""",
            (CAMPAIGN, run, person_id(f"account:ACC-{name}"), f"fcm:TOKEN-{name}", at, at,
             status, reason, status, at)).fetchone()[0])
    return ids


def _push(event: str, ts: str, name: str, delivery_id: str | None) -> dict:
    fields = {"client_id": f"phone-{name}", "device_type": "android",
              "push_token": f"fcm:TOKEN-{name}"}
    if delivery_id is not None:
        fields["delivery_id"] = delivery_id
    return ev(event, ts, **fields)


def test_campaign_stats_count_linked_receipts_and_opens_per_campaign_run_and_day(
        clean_warehouse: psycopg.Connection, database_url: str) -> None:
    import uuid

    ids = _ledger(clean_warehouse)
    wh = Warehouse(database_url)
    logins = [ev("user_login", "01 09:00", client_id=f"phone-{n}", user_id=f"ACC-{n}",
                 device_type="android", push_token=f"fcm:TOKEN-{n}") for n, *_ in LEDGER]
    wh.ingest([
        *logins,
        _push("push_received", "01 10:00:05", "a", ids["a"]),
        _push("push_received", "01 10:00:07", "a", ids["a"]),  # the resent copy: still one
        _push("push_opened", "01 10:02", "a", ids["a"]),  # 115 s after the first receipt
        _push("push_received", "01 10:00:09", "b", ids["b"]),  # received, never opened
        _push("push_opened", "02 10:01", "g", ids["g"]),  # no receipt (iOS): 60 s from the send
        _push("push_opened", "01 11:00", "c", str(uuid.uuid4())),  # no such delivery
        _push("push_opened", "01 11:00", "c", None),  # an older app: no delivery id
        _push("push_opened", "01 11:00", "e", ids["e"]),  # a skipped row was never sent
    ])
    # an imported row the collector would have refused: not a UUID
    clean_warehouse.execute(
        """INSERT INTO raw.events (event_id, event_type, event_ts, received_at, client_id,
               user_id, device_type, push_token, email, phone, source, payload, received_day)
           SELECT gen_random_uuid(), event_type, event_ts, received_at, client_id, user_id,
                  device_type, push_token, email, phone, 'ingest:old',
                  jsonb_set(payload, '{delivery_id}', '"not-a-uuid"'), received_day
           FROM raw.events WHERE payload ->> 'delivery_id' = %s""", (ids["b"],))
    wh.transform()

    links = dict(wh.rows("select link_status, count(*) from crm.push_delivery_events "
                         "group by 1"))
    assert links == {"linked": 5, "unknown_delivery": 1, "no_delivery_id": 1, "not_sent": 1,
                     "malformed": 1}
    outcome = {d: (delivered, opened) for d, delivered, opened in wh.rows(
        "select delivery_id::text, is_delivered, is_opened from crm.push_delivery_outcomes "
        "where campaign = %s", CAMPAIGN)}
    assert outcome == {ids["a"]: (True, True), ids["b"]: (True, False),
                       ids["c"]: (False, False), ids["d"]: (False, False),
                       ids["e"]: (False, False), ids["f"]: (False, False),
                       ids["g"]: (True, True)}

    columns = ("grain, run_id, send_day::text, planned, sent, failed, skipped, "
               "skipped_cap_day, skipped_opted_out, skipped_other, failed_by_reason, "
               "delivered, opened, delivery_rate, open_rate, median_seconds_to_open")
    stats = wh.rows(f"select {columns} from crm.push_campaign_stats where campaign = %s "
                    "order by grain, run_id, send_day", CAMPAIGN)
    assert stats == [
        ("campaign", None, None, 7, 4, 1, 2, 1, 1, 0, {"no_sender:apns": 1}, 3, 2, 0.75, 0.5,
         87.5),
        ("day", None, "2026-09-01", 6, 3, 1, 2, 1, 1, 0, {"no_sender:apns": 1}, 2, 1,
         2 / 3, 1 / 3, 115.0),
        ("day", None, "2026-09-02", 1, 1, 0, 0, 0, 0, 0, {}, 1, 1, 1.0, 1.0, 60.0),
        ("run", "r1", None, 6, 3, 1, 2, 1, 1, 0, {"no_sender:apns": 1}, 2, 1, 2 / 3, 1 / 3,
         115.0),
        ("run", "r2", None, 1, 1, 0, 0, 0, 0, 0, {}, 1, 1, 1.0, 1.0, 60.0),
    ]
