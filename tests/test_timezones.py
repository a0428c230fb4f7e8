"""Each person's time zone: sent by the devices (collector field `timezone`), else looked up
from their geo_location position (crm/timezones.py -> enrich.geo_timezones), else the shop's
(CRM_SHOP_TIMEZONE); and local hours computed with the zone's real rules (DST included).

Hand-made events go in through the collector's ingest path (or its HTTP API), `crm
transform`'s steps run for real (the Python lookup, then `dbt build` on PostgreSQL)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest

from collector.catalogue import EXAMPLES, TIME_ZONE_NAMES
from crm.settings import shop_timezone
from crm.timezones import lookup_timezone, update_geo_timezones
from tests.warehouse import Warehouse, ev, person_id

YEKATERINBURG = (56.84, 60.61)
VLADIVOSTOK = (43.12, 131.89)


def at(ts: str, event: str = "page_view", **fields: Any) -> dict[str, Any]:
    """An event at a full ISO timestamp (ev() covers September 2026 only)."""
    body = ev(event, "01 00:00", **fields)
    body["timestamp"] = ts
    return body


def geo(ts: str, position: tuple[float, float], **fields: Any) -> dict[str, Any]:
    return ev("geo_location", ts, latitude=position[0], longitude=position[1], **fields)


@pytest.fixture
def enrich_empty(db: psycopg.Connection) -> psycopg.Connection:
    db.execute("TRUNCATE enrich.geo_timezones, enrich.watermarks")
    return db


@pytest.fixture
def shop(clean_warehouse: psycopg.Connection, enrich_empty: psycopg.Connection,
         database_url: str) -> Warehouse:
    return Warehouse(database_url)


# --------------------------------------------------------------------------- pieces


@pytest.mark.parametrize(("position", "zone"), [
    (YEKATERINBURG, "Asia/Yekaterinburg"),
    (VLADIVOSTOK, "Asia/Vladivostok"),
    ((55.76, 37.62), "Europe/Moscow"),
    ((54.71, 20.45), "Europe/Kaliningrad"),
    ((52.52, 13.40), "Europe/Berlin"),
    ((40.71, -74.01), "America/New_York"),
    ((-33.87, 151.21), "Australia/Sydney"),
])
def test_geo_lookup_of_known_places(position, zone):
    assert lookup_timezone(*position) == zone


def test_shop_timezone_defaults_to_moscow_and_refuses_offsets(monkeypatch):
    monkeypatch.delenv("CRM_SHOP_TIMEZONE", raising=False)
    assert shop_timezone() == "Europe/Moscow"
    monkeypatch.setenv("CRM_SHOP_TIMEZONE", "Asia/Omsk")
    assert shop_timezone() == "Asia/Omsk"
    for bad in ("UTC+3", "Mars/Olympus", "localtime", "Europe/Moscow'; drop table x; --"):
        monkeypatch.setenv("CRM_SHOP_TIMEZONE", bad)
        with pytest.raises(ValueError, match="not an IANA time zone name"):
            shop_timezone()


def test_openapi_document_lists_the_zone_names_the_validator_accepts():
    jsonschema = pytest.importorskip("jsonschema")
    from collector.openapi import build_openapi

    doc = build_openapi()
    schemas = doc["components"]["schemas"]
    assert schemas["TimeZoneName"]["enum"] == list(TIME_ZONE_NAMES)
    assert "TimeZone.current.identifier" in schemas["PageViewEvent"]["properties"][
        "timezone"]["description"]
    event = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/Event", "components": doc["components"]})
    assert event.is_valid({**EXAMPLES["page_view"], "timezone": "Asia/Yekaterinburg"})
    assert not event.is_valid({**EXAMPLES["page_view"], "timezone": "UTC+3"})


def test_collector_rejects_an_invalid_zone_naming_the_field(collector_factory, clean_raw):
    collector = collector_factory()
    good = {**EXAMPLES["page_view"], "timezone": "Asia/Yekaterinburg"}
    bad = {**EXAMPLES["page_view"], "client_id": "tz-bad", "timezone": "UTC+3"}
    resp = collector.post([good, bad])
    assert resp.status_code == 202
    assert resp.json()["accepted"] == 1
    assert resp.json()["rejected"] == [
        {"index": 1, "errors": ["timezone: not an IANA time zone name"]}]
    (stored,) = clean_raw.execute("SELECT payload->>'timezone' FROM raw.events").fetchall()
    assert stored == ("Asia/Yekaterinburg",)
    assert clean_raw.execute("SELECT errors FROM raw.rejected_events").fetchall() == [
        (["timezone: not an IANA time zone name"],)]


def test_lookup_step_reads_each_new_position_once(shop: Warehouse, database_url: str):
    shop.ingest([geo("01 10:00", YEKATERINBURG, client_id="g1", device_type="ios"),
                 geo("01 11:00", (56.8412, 60.6079), client_id="g1", device_type="ios"),
                 geo("01 12:00", VLADIVOSTOK, client_id="g2", device_type="android")])
    assert update_geo_timezones(database_url).looked_up == 2  # the first two round alike
    assert update_geo_timezones(database_url).looked_up == 0
    shop.ingest([geo("02 10:00", (55.01, 82.94), client_id="g3", device_type="ios")])
    assert update_geo_timezones(database_url).looked_up == 1
    assert update_geo_timezones(database_url, full=True).looked_up == 0
    assert shop.rows("select latitude, longitude, timezone from enrich.geo_timezones "
                     "order by 1, 2") == [
        (Decimal("43.12"), Decimal("131.89"), "Asia/Vladivostok"),
        (Decimal("55.01"), Decimal("82.94"), "Asia/Novosibirsk"),
        (Decimal("56.84"), Decimal("60.61"), "Asia/Yekaterinburg")]


# --------------------------------------------------------------------------- end to end


def test_each_person_gets_one_zone_device_then_geo_then_shop_default(
    shop: Warehouse, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CRM_SHOP_TIMEZONE", "America/New_York")
    laptop = {"client_id": "a-laptop", "user_id": "U-A", "device_type": "web"}
    phone = {"client_id": "a-phone", "user_id": "U-A", "device_type": "ios"}
    berliner = {"client_id": "b-web", "user_id": "U-B", "device_type": "web",
                "timezone": "Europe/Berlin"}
    traveller = {"client_id": "c-phone", "user_id": "U-C", "device_type": "android"}
    shop.ingest([
        # A: two devices; the phone sent the most recent zone (it also sent the oldest), a
        # later geo does not beat it, nor does a later event that carries no zone
        ev("page_view", "01 10:00", timezone="Asia/Yekaterinburg", **phone),
        ev("page_view", "02 10:00", timezone="Europe/Berlin", **laptop),
        ev("page_view", "03 09:00", timezone="Asia/Yekaterinburg", **phone),
        geo("03 10:00", VLADIVOSTOK, **phone),
        ev("page_view", "04 10:00", **laptop),
        # B: Berlin, summer and winter time (CEST +2, CET +1), and a position elsewhere
        at("2024-07-01T10:00:00Z", **berliner),
        at("2024-01-15T10:00:00Z", **berliner),
        geo("05 17:00", VLADIVOSTOK, **berliner),
        # C: no zone sent; the latest position wins (it was also the first)
        geo("01 08:00", YEKATERINBURG, **traveller),
        geo("01 09:00", VLADIVOSTOK, **traveller),
        geo("02 09:00", YEKATERINBURG, **traveller),
        ev("page_view", "02 09:01", **traveller),
        # E: one position, Vladivostok (UTC+10 all year): 09-01 09:00Z is 19:00 there
        geo("01 09:00", VLADIVOSTOK, client_id="e-phone", device_type="ios"),
        ev("page_view", "01 09:00", client_id="e-phone", device_type="ios"),
        # D: a web visitor with no zone and no position: the shop's (EDT, UTC-4)
        ev("page_view", "05 18:00", client_id="d-web"),
    ])
    shop.transform()

    people = {
        "A": person_id("account:U-A"), "B": person_id("account:U-B"),
        "C": person_id("account:U-C"), "D": person_id("client_id:d-web"),
        "E": person_id("client_id:e-phone"),
    }
    zones = dict(shop.rows("select user_id::text, (timezone, timezone_source)::text "
                           "from crm.users"))
    assert {name: zones[uid] for name, uid in people.items()} == {
        "A": "(Asia/Yekaterinburg,device)",
        "B": "(Europe/Berlin,device)",
        "C": "(Asia/Yekaterinburg,geo)",
        "D": "(America/New_York,shop_default)",
        "E": "(Asia/Vladivostok,geo)",
    }

    def hours(uid: str) -> dict[int, int]:
        ((profile, zone),) = shop.rows("select active_hours_local, timezone "
                                       "from crm.user_features where user_id = %s", uid)
        assert zone == zones[uid][1:].split(",")[0]
        return {h: n for h, n in enumerate(profile) if n}

    # DST: 10:00Z is 12:00 in a Berlin July and 11:00 in a Berlin January
    assert hours(people["B"]) == {11: 1, 12: 1, 19: 1}  # + the 17:00Z geo event, CEST
    assert hours(people["D"]) == {14: 1}
    assert hours(people["E"]) == {19: 2}


def test_a_zone_sent_later_replaces_the_geo_answer_and_runs_equal_a_full_refresh(
    shop: Warehouse,
):
    phone = {"client_id": "f-phone", "user_id": "U-F", "device_type": "android"}
    shop.ingest([geo("01 10:00", YEKATERINBURG, **phone),
                 ev("page_view", "01 10:01", **phone)])
    shop.transform()
    query = "select timezone, timezone_source from crm.users where user_id = %s"
    uid = person_id("account:U-F")
    assert shop.rows(query, uid) == [("Asia/Yekaterinburg", "geo")]

    # the app is updated and starts sending its zone; a new position is looked up on the way
    shop.ingest([ev("page_view", "02 10:00", timezone="Asia/Vladivostok", **phone),
                 geo("02 10:01", (55.01, 82.94), client_id="g-phone", device_type="ios")])
    shop.transform()
    assert shop.rows(query, uid) == [("Asia/Vladivostok", "device")]
    marts = ("select * from crm.users order by user_id",
             "select * from crm.user_features order by user_id")
    incremental = [shop.rows(sql) for sql in marts]
    shop.transform(full_refresh=True)
    assert [shop.rows(sql) for sql in marts] == incremental
    assert shop.rows("select timezone, timezone_source from crm.users where user_id = %s",
                     person_id("client_id:g-phone")) == [("Asia/Novosibirsk", "geo")]
