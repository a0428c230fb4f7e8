"""Abandoned checkouts on a real PostgreSQL: who gets a reminder, and a planned reminder
cancelled when its person buys before it goes out; the shipped abandoned_cart campaign run
through run_campaign (as `crm campaign run abandoned_cart` runs it) to the local fake FCM."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from crm.transform import transform
from push.abandoned_cart import cancel_purchased, find_abandoned_carts
from push.fake_servers import FakePush
from push.fcm import FcmSender
from push.run import run_campaign
from tests.warehouse import insert_raw_event

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
CAMPAIGN = "abandoned_cart_test"


def _event(db: psycopg.Connection, event_type: str, user_id: str, ago: dt.timedelta,
           now: dt.datetime = NOW, push_token: str | None = None, **payload: object) -> None:
    insert_raw_event(db, event_type, user_id, now - ago, push_token=push_token, **payload)


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


# The shipped campaign, end to end. Its clock is yesterday at noon UTC: outside quiet hours
# for people without a known zone, and in the past of the database's clock (planned_at).
NOON = (NOW - dt.timedelta(days=1)).replace(hour=12, minute=0, second=0)
CART = "abandoned_cart"


@pytest.fixture(scope="module")
def fake_push(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakePush]:
    fake = FakePush(tmp_path_factory.mktemp("fake-push"))
    fake.start()
    yield fake
    fake.stop()


def _fcm(fake: FakePush) -> FcmSender:
    creds = json.loads(Path(fake.env["CRM_FCM_CREDENTIALS"]).read_text())
    return FcmSender(creds, fake.env["CRM_FCM_URL"])


def _received(fake: FakePush, token: str) -> list[dict]:
    return [m for m in fake.fcm.received if json.dumps(m).find(token) >= 0]


def _ledger(db: psycopg.Connection) -> dict[str, str]:
    return dict(db.execute(
        "SELECT u.external_user_id, d.status || ':' || coalesce(d.reason, '')"
        " FROM push.deliveries d JOIN crm.users u ON u.user_id::text = d.person_id"
        " WHERE d.campaign = %s", (CART,)).fetchall())


@dataclass
class CartShop:
    db: psycopg.Connection
    tag: str  # in this test's tokens: the fake server is shared by the module


@pytest.fixture
def cart_shop(clean_warehouse: psycopg.Connection, database_url: str) -> CartShop:
    db, h = clean_warehouse, dt.timedelta(hours=1)
    tag = uuid.uuid4().hex[:8]
    _event(db, "page_view", "c-left", 3 * h, NOON, push_token=f"tok-left-{tag}")
    _event(db, "checkout_start", "c-left", 2 * h, NOON, total_price=42.5)
    _event(db, "page_view", "c-bought", 4 * h, NOON, push_token=f"tok-bought-{tag}")
    _event(db, "checkout_start", "c-bought", 3 * h, NOON, total_price=7)
    _event(db, "order_complete", "c-bought", 2 * h, NOON, order_id="o-1", total_price=7)
    _event(db, "page_view", "c-fresh", 2 * h, NOON, push_token=f"tok-fresh-{tag}")
    _event(db, "checkout_start", "c-fresh", dt.timedelta(minutes=20), NOON, total_price=3)
    transform(database_url=database_url)
    db.execute("DELETE FROM push.deliveries WHERE campaign = %s", (CART,))
    return CartShop(db, tag)


def test_the_campaign_reminds_each_abandoned_cart_once(
        cart_shop: CartShop, database_url: str, fake_push: FakePush) -> None:
    db, tag = cart_shop.db, cart_shop.tag
    first = run_campaign(database_url, CART, now=NOON, senders={"fcm": _fcm(fake_push)})
    # The finder names the audience: only the cart left two hours ago without an order.
    assert (first.audience, first.line()) == (1, "sent=1 skipped=0 failed=0")
    assert _ledger(db) == {"c-left": "sent:"}
    [push] = _received(fake_push, f"tok-left-{tag}")
    assert push["notification"]["title"] == "Still thinking it over?"
    # The trigger looks again five minutes later (a new run): that cart was reminded already.
    again = run_campaign(database_url, CART, now=NOON + dt.timedelta(minutes=5),
                         senders={"fcm": _fcm(fake_push)})
    assert (again.audience, again.planned_new, again.line()) == (0, 0, "sent=0 skipped=0 failed=0")
    assert len(_received(fake_push, f"tok-left-{tag}")) == 1
    # The fresh cart comes due once it is an hour old; the buyer never does.
    later = run_campaign(database_url, CART, now=NOON + dt.timedelta(minutes=45),
                         senders={"fcm": _fcm(fake_push)})
    assert later.line() == "sent=1 skipped=0 failed=0"
    assert _ledger(db) == {"c-left": "sent:", "c-fresh": "sent:"}
    assert not _received(fake_push, f"tok-bought-{tag}")


def test_a_named_person_who_bought_meanwhile_is_not_reminded(
        cart_shop: CartShop, database_url: str, fake_push: FakePush) -> None:
    db, tag = cart_shop.db, cart_shop.tag
    person = pid(db, "c-left")
    # The sensor named them at its tick; they ordered before the run started.
    _event(db, "order_complete", "c-left", dt.timedelta(minutes=2), NOON, order_id="o-9")
    done = run_campaign(database_url, CART, now=NOON, senders={"fcm": _fcm(fake_push)},
                        people=[person])
    assert done.line() == "sent=0 skipped=1 failed=0" and done.skips == {"purchased": 1}
    assert _ledger(db) == {"c-left": "skipped:purchased"}
    assert not _received(fake_push, f"tok-left-{tag}")
