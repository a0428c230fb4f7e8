"""Abandoned checkouts on a real PostgreSQL: who gets a reminder, and a planned reminder
cancelled when its person buys before it goes out."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from crm.transform import transform
from push.abandoned_cart import cancel_purchased, find_abandoned_carts

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
CAMPAIGN = "abandoned_cart_test"


def _event(db: psycopg.Connection, event_type: str, user_id: str, ago: dt.timedelta,
           **payload: object) -> None:
    ts = NOW - ago
    db.execute("SELECT raw.ensure_event_partitions(%s, %s)", (ts.date(), ts.date()))
    db.execute(
        "INSERT INTO raw.events (event_id, event_type, event_ts, received_at, client_id,"
        " user_id, device_type, source, payload, received_day) VALUES (%s, %s, %s, %s, %s,"
        " %s, 'web', 'test', %s, %s)",
        (uuid.uuid4(), event_type, ts, ts, f"cid-{user_id}", user_id,
         Jsonb({"event": event_type, **payload}), ts.date()))


def accounts(db: psycopg.Connection, people: list[str]) -> list[str]:
    """The shop account ids of person ids, in the given order."""
    names = dict(db.execute("SELECT user_id::text, external_user_id FROM crm.users").fetchall())
    return [names[p] for p in people]


def pid(db: psycopg.Connection, account: str) -> str:
    return db.execute("SELECT user_id::text FROM crm.users WHERE external_user_id = %s",
                      (account,)).fetchone()[0]


@pytest.fixture
def carts(clean_warehouse: psycopg.Connection, database_url: str) -> psycopg.Connection:
    clean_raw = clean_warehouse
    h = dt.timedelta(hours=1)
    _event(clean_raw, "checkout_start", "u-abandoned", 2 * h, total_price=42.5)
    _event(clean_raw, "checkout_start", "u-too-fresh", dt.timedelta(minutes=20), total_price=10)
    _event(clean_raw, "checkout_start", "u-bought", 3 * h, total_price=7)
    _event(clean_raw, "order_complete", "u-bought", 2 * h, order_id="o-1", total_price=7)
    # Bought once, then came back and left a new cart: that new cart counts.
    _event(clean_raw, "order_complete", "u-again", 30 * h, order_id="o-0", total_price=5)
    _event(clean_raw, "checkout_abandonment", "u-again", 5 * h)
    _event(clean_raw, "checkout_start", "u-ancient", dt.timedelta(days=5), total_price=1)
    transform(database_url=database_url)  # crm.users maps accounts to people
    clean_raw.execute("DELETE FROM push.deliveries WHERE campaign = %s", (CAMPAIGN,))
    return clean_raw


def test_finds_checkouts_older_than_an_hour_without_an_order(carts: psycopg.Connection) -> None:
    found = find_abandoned_carts(carts, now=NOW)
    assert sorted(accounts(carts, [c.person_id for c in found])) == ["u-abandoned", "u-again"]
    found = sorted(found, key=lambda c: accounts(carts, [c.person_id]))
    assert found[0].total_price == 42.5
    assert found[0].checkout_at == NOW - dt.timedelta(hours=2)
    # With a 10-minute threshold the fresh cart is due too.
    later = find_abandoned_carts(carts, now=NOW, min_age=dt.timedelta(minutes=10))
    assert "u-too-fresh" in accounts(carts, [c.person_id for c in later])


def _plan(db: psycopg.Connection, person: str) -> None:
    db.execute(
        "INSERT INTO push.deliveries (campaign, run_id, person_id, send_at, expires_at,"
        " planned_at) VALUES (%s, 'r1', %s, %s, %s, %s)",
        (CAMPAIGN, pid(db, person), NOW + dt.timedelta(hours=1), NOW + dt.timedelta(hours=6),
         NOW - dt.timedelta(minutes=30)))


def test_planned_reminder_is_cancelled_when_the_person_buys(carts: psycopg.Connection) -> None:
    _plan(carts, "u-abandoned")
    _plan(carts, "u-again")
    assert cancel_purchased(carts, CAMPAIGN, now=NOW) == 0
    _event(carts, "order_complete", "u-abandoned", dt.timedelta(minutes=5), order_id="o-2")
    assert cancel_purchased(carts, CAMPAIGN, now=NOW) == 1
    rows = dict(carts.execute(
        "SELECT u.external_user_id, d.status || ':' || coalesce(d.reason, '')"
        " FROM push.deliveries d JOIN crm.users u ON u.user_id::text = d.person_id"
        " WHERE d.campaign = %s", (CAMPAIGN,)).fetchall())
    assert rows == {"u-abandoned": "skipped:purchased", "u-again": "planned:"}
    left = find_abandoned_carts(carts, now=NOW)
    assert accounts(carts, [c.person_id for c in left]) == ["u-again"]


def test_claimed_reminder_is_left_to_its_sender(carts: psycopg.Connection) -> None:
    _plan(carts, "u-abandoned")
    carts.execute("UPDATE push.deliveries SET attempts = 1 WHERE campaign = %s", (CAMPAIGN,))
    _event(carts, "order_complete", "u-abandoned", dt.timedelta(minutes=5), order_id="o-3")
    assert cancel_purchased(carts, CAMPAIGN, now=NOW) == 0


def test_bad_thresholds_are_named(carts: psycopg.Connection) -> None:
    with pytest.raises(ValueError, match="min_age"):
        find_abandoned_carts(carts, now=NOW, min_age=dt.timedelta(hours=-1))
    with pytest.raises(ValueError, match="lookback"):
        find_abandoned_carts(carts, now=NOW, lookback=dt.timedelta(minutes=5))
    with pytest.raises(ValueError, match="timezone-aware"):
        find_abandoned_carts(carts, now=NOW.replace(tzinfo=None))
