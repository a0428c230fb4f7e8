"""Sessions, visit / purchase history, products and user features end to end: hand-made
events go in through the collector's ingest path, `dbt build` runs for real on PostgreSQL, and
the marts (crm.fct_sessions, crm.visit_history, crm.purchase_history, crm.dim_products,
crm.user_features) are checked against values worked out by hand. The last tests check that a
sequence of incremental runs, with late events, gives exactly what one full refresh gives."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest

from collector.ingest import ingest_items
from tests.warehouse import Warehouse, ev, person_id

pytestmark = pytest.mark.slow

# Marts that must not depend on how the data was split between runs (ordered, comparable).
MARTS = {
    "fct_sessions": "select * from crm.fct_sessions order by session_id",
    "sessions_quarantine": "select * from crm.sessions_quarantine order by session_id",
    "visit_history": "select * from crm.visit_history order by user_id, page_url",
    "purchase_history": "select * from crm.purchase_history order by order_id",
    "dim_products": "select * from crm.dim_products order by product_id",
    "user_features": "select * from crm.user_features order by user_id",
}




def order(order_id: str, ts: str, total: float, items: list[tuple[str, int, float]],
          **fields: Any) -> dict[str, Any]:
    return ev("order_complete", ts, order_id=order_id, total_price=total,
              order_items=[{"product_id": p, "quantity": q, "price": pr} for p, q, pr in items],
              payment_method="card", **fields)


class Shop(Warehouse):
    """Readers of the marts this suite checks."""

    def dicts(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.url) as conn:
            cur = conn.execute(sql, params)
            names = [d.name for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def sessions(self, client_id: str) -> list[dict[str, Any]]:
        return self.dicts("select * from crm.fct_sessions where client_id = %s "
                          "order by started_at", client_id)

    def snapshot(self) -> dict[str, list[tuple]]:
        return {name: self.rows(sql) for name, sql in MARTS.items()}


@pytest.fixture
def shop(clean_warehouse: psycopg.Connection, database_url: str) -> Shop:
    return Shop(database_url)


# --------------------------------------------------------------------------- sessions


def test_thirty_minutes_of_inactivity_ends_a_session(shop: Shop):
    shop.ingest([
        ev("page_view", "01 10:00", client_id="d1", page_url="/home", referrer="https://ya.ru/"),
        ev("scroll", "01 10:10", client_id="d1", page_url="/home", scroll_depth=50),
        # exactly 30 minutes later: still the same visit
        ev("page_view", "01 10:40", client_id="d1", page_url="/shoes"),
        # 30 minutes and one second: a new one
        ev("search", "01 11:10:01", client_id="d1", search_query="boots"),
        ev("page_view", "01 11:11", client_id="d1", page_url="/boots"),
    ])
    shop.transform()

    first, second = shop.sessions("d1")
    assert (first["events"], first["page_views"], first["landing_page"], first["referrer"]) == (
        3, 2, "/home", "https://ya.ru/")
    assert first["duration_seconds"] == 40 * 60
    assert first["converted"] is False and first["revenue"] == 0
    assert (second["events"], second["page_views"], second["landing_page"]) == (2, 1, "/boots")
    assert str(second["started_at"]).startswith("2026-09-01 11:10:01")
    anonymous = person_id("client_id:d1")
    assert {str(s["user_id"]) for s in (first, second)} == {anonymous}
    assert first["account_id"] is None and first["device_type"] == "web"


def test_another_account_logging_in_starts_a_new_session(shop: Shop):
    shop.ingest([
        ev("page_view", "01 10:00", client_id="family"),
        ev("user_login", "01 10:01", client_id="family", user_id="MUM", email="mum@x.ru"),
        ev("page_view", "01 10:02", client_id="family", user_id="MUM"),
        ev("user_logout", "01 10:05", client_id="family", user_id="MUM"),
        ev("page_view", "01 10:06", client_id="family"),
        ev("user_login", "01 10:07", client_id="family", user_id="DAD", email="dad@x.ru"),
        ev("page_view", "01 10:08", client_id="family", user_id="DAD"),
    ])
    shop.transform()

    mum, dad = shop.sessions("family")
    assert (mum["account_id"], mum["events"]) == ("MUM", 5)
    assert (dad["account_id"], dad["events"]) == ("DAD", 2)
    assert str(mum["user_id"]) == person_id("account:MUM")
    assert str(dad["user_id"]) == person_id("account:DAD")


def test_order_gives_conversion_and_revenue_once(shop: Shop):
    oc = order("O-1", "01 10:05", 150, [("SKU-1", 1, 100), ("SKU-2", 2, 25)],
               client_id="d1", user_id="U-1")
    shop.ingest([
        ev("page_view", "01 10:00", client_id="d1", user_id="U-1"),
        {**oc, "event_id": "00000000-0000-4000-8000-000000000001"},
        # the shop's back end resent it under another event id
        {**oc, "event_id": "00000000-0000-4000-8000-000000000002"},
        ev("page_view", "01 12:00", client_id="d1", user_id="U-1"),
    ])
    shop.transform()

    bought, browsed = shop.sessions("d1")
    assert (bought["converted"], bought["n_orders"], bought["revenue"]) == (True, 1, 150)
    assert (browsed["converted"], browsed["revenue"]) == (False, 0)
    assert shop.rows("select order_id, total_price, source from crm.purchase_history") == [
        ("O-1", Decimal(150), "observed")]
    products = dict(shop.rows("select product_id, purchases from crm.dim_products"))
    assert products == {"SKU-1": 1, "SKU-2": 1}


def test_late_event_rejoins_sessions_on_the_next_incremental_run(shop: Shop):
    shop.ingest([
        ev("page_view", "01 10:00", client_id="app", device_type="ios"),
        ev("page_view", "01 10:50", client_id="app", device_type="ios"),
    ])
    shop.transform()
    assert len(shop.sessions("app")) == 2

    # An app event queued offline arrives a day late and bridges the gap (25 + 25 minutes).
    shop.ingest([ev("page_view", "01 10:25", client_id="app", device_type="ios")])
    shop.transform()
    (session,) = shop.sessions("app")
    assert (session["events"], session["duration_seconds"]) == (3, 50 * 60)

    incremental = shop.snapshot()
    shop.transform(full_refresh=True)
    assert shop.snapshot() == incremental


def test_incremental_runs_reopen_sessions_exactly_at_the_timeout(shop: Shop):
    """New and late events 29:59, 30:00 and 30:01 away from a stored session: the incremental
    runs re-open exactly what a full refresh joins (a gap of 30:00 still continues a
    session), and their result equals one full refresh."""
    first_visit = [("10:00", "10:05")]  # stored by run 1; the gaps count from 10:05
    devices = {
        "after-2959": first_visit, "after-3000": first_visit, "after-3001": first_visit,
        # 60:00 between two visits: a late event at 10:35:00 is 30:00 from both
        "bridge": [("10:00", "10:05"), ("11:05", "11:10")],
        # a late event before the stored visit (11:00-11:05)
        "before-3000": [("11:00", "11:05")], "before-3001": [("11:00", "11:05")],
    }
    shop.ingest([ev("page_view", f"01 {t}", client_id=cid)
                 for cid, visits in devices.items() for visit in visits for t in visit])
    shop.transform()
    assert {cid: len(shop.sessions(cid)) for cid in devices} == {
        cid: len(visits) for cid, visits in devices.items()}

    shop.ingest([
        ev("page_view", "01 10:34:59", client_id="after-2959"),
        ev("page_view", "01 10:35:00", client_id="after-3000"),
        ev("page_view", "01 10:35:01", client_id="after-3001"),
        ev("page_view", "01 10:35:00", client_id="bridge"),
        ev("page_view", "01 10:30:00", client_id="before-3000"),
        ev("page_view", "01 10:29:59", client_id="before-3001"),
    ])
    shop.transform()
    # a third run extends the re-opened session again, exactly 30:00 after its new end
    shop.ingest([ev("page_view", "01 11:05:00", client_id="after-3000")])
    shop.transform()

    def shape(cid: str) -> list[tuple[str, str, int]]:
        return [(s["started_at"].strftime("%H:%M:%S"), s["ended_at"].strftime("%H:%M:%S"),
                 s["events"]) for s in shop.sessions(cid)]

    incremental = {cid: shape(cid) for cid in devices}
    assert incremental == {
        "after-2959": [("10:00:00", "10:34:59", 3)],
        "after-3000": [("10:00:00", "11:05:00", 4)],
        "after-3001": [("10:00:00", "10:05:00", 2), ("10:35:01", "10:35:01", 1)],
        "bridge": [("10:00:00", "11:10:00", 5)],
        "before-3000": [("10:30:00", "11:05:00", 3)],
        "before-3001": [("10:29:59", "10:29:59", 1), ("11:00:00", "11:05:00", 2)],
    }
    marts = shop.snapshot()
    shop.transform(full_refresh=True)
    assert {cid: shape(cid) for cid in devices} == incremental
    assert shop.snapshot() == marts


def test_late_login_of_another_account_splits_a_session(shop: Shop):
    shop.ingest([
        ev("page_view", "01 10:00", client_id="tablet", user_id="MUM"),
        ev("page_view", "01 10:10", client_id="tablet", user_id="MUM"),
        ev("page_view", "01 10:20", client_id="tablet", user_id="MUM"),
        ev("page_view", "01 10:30", client_id="tablet"),
    ])
    shop.transform()
    assert [s["events"] for s in shop.sessions("tablet")] == [4]

    # DAD's login at 10:05 arrives late: DAD from 10:05, MUM again at 10:10 (her events say
    # so), and the anonymous 10:30 view stays with MUM, who was logged in last.
    shop.ingest([ev("user_login", "01 10:05", client_id="tablet", user_id="DAD")])
    shop.transform()
    got = [(s["account_id"], s["events"]) for s in shop.sessions("tablet")]
    assert got == [("MUM", 1), ("DAD", 1), ("MUM", 3)]

    incremental = shop.snapshot()
    shop.transform(full_refresh=True)
    assert shop.snapshot() == incremental


def test_runaway_sessions_are_quarantined(shop: Shop):
    # a stuck tracker pinging every 20 minutes for 26 hours
    pings = [ev("page_view", f"{1 + m // 1440:02d} {m // 60 % 24:02d}:{m % 60:02d}",
                client_id="bot") for m in range(0, 26 * 60, 20)]
    shop.ingest([*pings, ev("page_view", "05 10:00", client_id="human")])
    shop.transform()
    assert shop.sessions("bot") == []
    assert shop.rows("select client_id, events, reason from crm.sessions_quarantine") == [
        ("bot", len(pings), "too_long")]
    assert len(shop.sessions("human")) == 1


# --------------------------------------------------------------------------- histories


def test_purchase_and_visit_history_merge_imports_with_live_events(shop: Shop):
    shop.ingest([
        ev("purchase_history", "01 00:00", user_id="U-1", order_id="O-1",
           order_items=[{"product_id": "SKU-1", "quantity": 1, "price": 100}],
           total_price=100, purchase_date="2026-08-31"),
        ev("purchase_history", "01 00:00", user_id="U-1", order_id="O-0",
           order_items=[{"product_id": "SKU-2", "quantity": 3, "price": 10}],
           total_price=30, purchase_date="2025-12-24"),
        ev("visit_history", "01 00:00", user_id="U-1", page_url="/a", visit_count=5,
           last_visit="2026-09-01T12:00:00Z"),
        ev("visit_history", "01 00:00", user_id="U-1", page_url="/old", visit_count=2,
           last_visit="2026-07-01T12:00:00Z"),
        # live: O-1 seen again (the import overlaps the tracking), and /a visited after
        order("O-1", "01 11:00", 100, [("SKU-1", 1, 100)], client_id="d1", user_id="U-1"),
        ev("page_view", "01 12:00", client_id="d1", user_id="U-1", page_url="/a"),
        ev("page_view", "02 09:00", client_id="d1", user_id="U-1", page_url="/a"),
        ev("page_view", "02 09:05", client_id="d1", user_id="U-1", page_url="/b"),
    ])
    shop.transform()
    u1 = uuid.UUID(person_id("account:U-1"))

    assert shop.rows("select user_id, order_id, total_price, purchase_date::text, source "
                     "from crm.purchase_history order by order_id") == [
        (u1, "O-0", Decimal(30), "2025-12-24", "imported"),
        (u1, "O-1", Decimal(100), "2026-09-01", "both")]
    # /a: 5 imported up to 09-01 12:00 (the 12:00 view is one of them) + the 09-02 view
    assert shop.rows("select page_url, visit_count, last_visit::text, source "
                     "from crm.visit_history where user_id = %s order by page_url", u1) == [
        ("/a", 6, "2026-09-02 09:00:00+00", "both"),
        ("/b", 1, "2026-09-02 09:05:00+00", "observed"),
        ("/old", 2, "2026-07-01 12:00:00+00", "imported")]
    # imports are not browsing: no session at their 00:00 import time
    assert [s["events"] for s in shop.sessions("d1")] == [1, 1, 2]
    (features,) = shop.dicts("select * from crm.user_features where user_id = %s", u1)
    assert (features["orders"], features["monetary"], features["sessions"]) == (2, 130, 3)


# --------------------------------------------------------------------------- features


def test_user_features_by_hand(shop: Shop):
    phone = {"client_id": "phone", "user_id": "U-7", "device_type": "ios"}
    shop.ingest([
        # Novosibirsk: UTC+7, so 13:0x UTC is 20:0x local
        ev("geo_location", "02 13:00", latitude=55.0, longitude=82.9, **phone),
        ev("page_view", "02 13:01", page_url="/p/1", **phone),
        ev("product_view", "02 13:02", product_id="SKU-1", product_name="Boot", category="shoes",
           price=100, **phone),
        ev("product_view", "02 13:03", product_id="SKU-2", product_name="Bag", category="bags",
           price=50, **phone),
        ev("add_to_cart", "02 13:04", product_id="SKU-1", product_name="Boot", quantity=1,
           price=100, **phone),
        order("O-9", "02 13:05", 100, [("SKU-1", 1, 100)], **phone),
        ev("push_received", "03 09:00", push_token="T-1", notification_type="offer", **phone),
        ev("push_received", "04 09:00", push_token="T-1", notification_type="offer", **phone),
        ev("push_opened", "03 09:01", push_token="T-1", notification_type="offer", **phone),
        ev("page_view", "04 10:00", client_id="laptop", user_id="U-7", page_url="/p/2"),
        # someone else, web only: no zone, no geo, so the shop's (Europe/Moscow, UTC+3)
        ev("page_view", "05 18:00", client_id="other"),
    ])
    shop.transform()

    u7 = person_id("account:U-7")
    f = shop.dicts("select * from crm.user_features where user_id = %s", u7)[0]
    # 8 browsing events: 7 on iOS (the push delivery is not browsing), 1 on the web
    assert f["events"] == 8 and f["sessions"] == 3
    assert (f["share_ios"], f["share_web"], f["share_android"]) == (
        Decimal("0.8750"), Decimal("0.1250"), Decimal("0.0000"))
    assert (f["timezone"], f["timezone_source"]) == ("Asia/Novosibirsk", "geo")
    hours = [0] * 24
    hours[20], hours[16], hours[17] = 6, 1, 1  # 13:0x, 09:01 and 10:00 UTC, +7
    assert f["active_hours_local"] == hours and f["peak_hour_local"] == 20
    # touches: 2 views (shoes, bags), 1 cart (shoes), 1 bought line (shoes)
    assert f["top_categories"] == {"shoes": 0.75, "bags": 0.25}
    assert f["top_category"] == "shoes"
    assert (f["push_received"], f["push_opened"], f["push_open_rate"]) == (2, 1, Decimal("0.5"))
    assert (f["orders"], f["monetary"], f["avg_order_value"]) == (1, 100, 100)
    assert f["is_authorised"] is True
    assert str(f["last_seen_at"]).startswith("2026-09-04 10:00")
    as_of = shop.rows("select max(received_at) from staging.stg_events")[0][0]
    assert f["as_of"] == as_of
    expected = (as_of - f["last_order_at"]).total_seconds() / 86400
    assert abs(float(f["days_since_last_order"]) - expected) < 0.001

    other = shop.dicts("select * from crm.user_features where user_id = %s",
                       person_id("client_id:other"))[0]
    assert (other["timezone_source"], other["timezone"], other["peak_hour_local"]) == (
        "shop_default", "Europe/Moscow", 21)
    assert other["orders"] == 0 and other["is_authorised"] is False
    assert other["push_open_rate"] is None and other["top_categories"] is None

    assert shop.rows("select product_id, product_name, category, price, views, carts, "
                     "purchases from crm.dim_products order by product_id") == [
        ("SKU-1", "Boot", "shoes", Decimal(100), 1, 1, 1),
        ("SKU-2", "Bag", "bags", Decimal(50), 1, 0, 0)]


# --------------------------------------------------------------------------- incremental


def test_incremental_runs_equal_one_full_refresh_on_simulated_traffic(shop: Shop):
    from simulator import SimConfig, simulate

    sim = simulate(SimConfig(visitors=120, days=6, seed=11))
    items = [orjson.loads(line) for line in sim.lines]
    # Arrival order, in three nightly batches: late app events come with later batches.
    cut1, cut2 = len(items) // 3, 2 * len(items) // 3
    batches = [items[:cut1], items[cut1:cut2], items[cut2:]]
    # plus hand-made late events for day 1 arriving with batches 2 and 3: one bridges two of
    # a device's sessions, one is another account logging in on it
    first_device = next(i for i in batches[0] if i.get("client_id") and i.get("event")
                        == "page_view" and i.get("timestamp", "").startswith("2026-09-01"))
    cid = first_device["client_id"]
    seen = datetime.fromisoformat(first_device["timestamp"])
    batches[1].append({"event": "page_view", "client_id": cid, "device_type": "web",
                       "timestamp": (seen + timedelta(minutes=20)).isoformat(),
                       "page_url": "/late"})
    batches[2].append({"event": "user_login", "client_id": cid, "device_type": "web",
                       "timestamp": (seen + timedelta(minutes=5)).isoformat(),
                       "user_id": "LATE-ACCOUNT", "auth_status": 1})
    for batch in batches:
        # the stream has invalid events on purpose: the collector rejects those
        ingest_items(batch, database_url=shop.url, source="ingest:test", progress=False)
        shop.transform()
    incremental = shop.snapshot()
    assert len(incremental["fct_sessions"]) > 100

    shop.transform(full_refresh=True)
    full = shop.snapshot()
    for name in MARTS:
        assert full[name] == incremental[name], name
