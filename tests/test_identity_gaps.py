"""The identity graph's three gaps, end to end (collector ingest -> PostgreSQL -> real dbt build):
a shared device after a logout, a kiosk only one shopper ever logged in to, and merges of two
anonymous visitors in crm.user_id_history. Each scenario also checks that incremental runs
give the same tables as one full refresh."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.test_identity import Identity
from tests.warehouse import ev, person_id

pytestmark = pytest.mark.slow


@pytest.fixture
def identity(clean_warehouse: psycopg.Connection, database_url: str) -> Identity:
    return Identity(database_url)


def _order(ts: str, client_id: str, order_id: str, **fields: Any) -> dict[str, Any]:
    return ev("order_complete", ts, client_id=client_id, order_id=order_id, total_price=5,
              order_items=[{"product_id": "SKU-1", "quantity": 1, "price": 5}], **fields)


def _people(identity: Identity, sql: str) -> set[str]:
    return {str(r[0]) for r in identity.rows(sql)}


def test_shared_device_after_logout_is_nobodys_and_a_single_users_stays_theirs(
        identity: Identity):
    first = [
        # a family tablet: MUM logs in and out, then someone browses and buys anonymously
        ev("user_login", "01 09:00", client_id="fam", user_id="MUM"),
        ev("page_view", "01 09:30", client_id="fam", page_url="https://shop.example/mum"),
        ev("user_logout", "01 10:00", client_id="fam", user_id="MUM"),
        ev("page_view", "01 11:00", client_id="fam", page_url="https://shop.example/stranger"),
        _order("01 11:05", "fam", "O-STRANGER"),
        # a laptop only SOLO ever used: after SOLO's logout it is still SOLO browsing
        ev("user_login", "01 09:00", client_id="solo-laptop", user_id="SOLO"),
        ev("user_logout", "01 10:00", client_id="solo-laptop", user_id="SOLO"),
        ev("page_view", "01 11:00", client_id="solo-laptop", page_url="https://shop.example/solo"),
    ]
    identity.ingest(first)
    identity.transform()
    # the second account arrives on the next run: fam becomes shared, incrementally
    identity.ingest([
        ev("user_login", "02 20:00", client_id="fam", user_id="DAD"),
        ev("page_view", "02 20:30", client_id="fam", page_url="https://shop.example/dad"),
    ])
    identity.transform()

    mum, dad, solo = (person_id(f"account:{a}") for a in ("MUM", "DAD", "SOLO"))
    fam_visitor = person_id("client_id:fam")
    assert identity.rows(
        "select event_ts::text, user_id::text, resolved_by from intermediate.int_event_person "
        "where client_id = 'fam' order by event_ts") == [
        ("2026-09-01 09:00:00+00", mum, "account"),
        ("2026-09-01 09:30:00+00", mum, "shared_device"),
        ("2026-09-01 10:00:00+00", mum, "account"),
        ("2026-09-01 11:00:00+00", fam_visitor, "shared_device_logged_out"),
        ("2026-09-01 11:05:00+00", fam_visitor, "shared_device_logged_out"),
        ("2026-09-02 20:00:00+00", dad, "account"),
        ("2026-09-02 20:30:00+00", dad, "shared_device")]
    assert set(identity.event_person(client_id="solo-laptop")) == {solo}

    # the marts recommendations and pushes are built from follow that attribution
    visits = {(str(u), url) for u, url in identity.rows(
        "select user_id, page_url from crm.visit_history")}
    assert (fam_visitor, "https://shop.example/stranger") in visits
    assert not {(p, "https://shop.example/stranger") for p in (mum, dad)} & visits
    assert (solo, "https://shop.example/solo") in visits
    assert identity.rows("select user_id::text from crm.purchase_history "
                         "where order_id = 'O-STRANGER'") == [(fam_visitor,)]
    assert _people(identity, "select user_id from crm.user_features where orders > 0") == {
        fam_visitor}
    assert identity.rows("select auth_status from crm.users where user_id = %s",
                         fam_visitor) == [(False,)]
    assert identity.person_of("fam") == {mum, dad, fam_visitor}

    incremental = identity.snapshot()
    identity.transform(full_refresh=True)
    assert identity.snapshot() == incremental


def test_kiosk_with_one_shoppers_login_is_public_by_its_strangers(identity: Identity):
    events = [
        # the only account ever seen on the kiosk, with a web-push subscription there
        ev("user_login", "01 10:00", client_id="kiosk", user_id="SHOPPER",
           push_token="https://push.example/kiosk-sub"),
        ev("user_logout", "01 10:10", client_id="kiosk", user_id="SHOPPER"),
        ev("user_login", "01 18:00", client_id="shopper-phone", user_id="SHOPPER",
           device_type="android", push_token="fcm:SHOPPER-PHONE"),
    ]
    for n in range(5):  # more than max_strangers_per_device (3) guest checkouts
        events += [
            ev("page_view", f"0{n + 2} 12:00", client_id="kiosk", page_url=f"https://shop.example/g{n}"),
            _order(f"0{n + 2} 12:05", "kiosk", f"O-K{n}", email=f"guest{n}@mail.ru"),
            # each guest's own phone, with the same e-mail
            _order(f"0{n + 2} 19:00", f"guest-{n}", f"O-H{n}", email=f"guest{n}@mail.ru"),
        ]
    identity.ingest(events[: len(events) // 2])
    identity.transform()
    identity.ingest(events[len(events) // 2:])
    identity.transform()

    shopper, kiosk_visitor = person_id("account:SHOPPER"), person_id("client_id:kiosk")
    assert identity.rows("select client_id, n_accounts, n_strangers, user_id::text "
                         "from crm.public_devices") == [("kiosk", 1, 5, kiosk_visitor)]
    # the strangers' kiosk browsing is not the shopper's; an order is its guest's e-mail's
    assert set(identity.event_person(client_id="kiosk", event="page_view")) == {kiosk_visitor}
    assert identity.rows("select order_id, user_id::text from crm.purchase_history "
                         "where order_id like 'O-K%%' order by order_id") == [
        (f"O-K{n}", person_id(f"client_id:guest-{n}")) for n in range(5)]
    assert not [url for (url,) in identity.rows(
        "select page_url from crm.visit_history where user_id = %s", shopper)
        if "/g" in url]
    # the kiosk is not the shopper's device nor push route; the guests stay apart
    assert identity.person_of("kiosk") == {kiosk_visitor}
    assert identity.rows("select push_token, is_valid, invalid_reason from crm.push_tokens "
                         "where user_id = %s order by push_token", shopper) == [
        ("fcm:SHOPPER-PHONE", True, None),
        ("https://push.example/kiosk-sub", False, "public_device")]
    for n in range(5):
        assert identity.person_of(f"guest-{n}") == {person_id(f"client_id:guest-{n}")}
    assert identity.scalar("select count(*) from crm.users where auth_status") == 1

    incremental = identity.snapshot()
    identity.transform(full_refresh=True)
    assert identity.snapshot() == incremental


def test_anonymous_visitors_merged_are_in_user_id_history(identity: Identity):
    email = "shared@mail.ru"
    identity.ingest([
        ev("page_view", "01 09:00", client_id="a1", page_url="https://shop.example/1"),
        ev("page_view", "02 09:00", client_id="a2", page_url="https://shop.example/2"),
        _order("03 09:00", "a2", "O-A2", email=email),  # a2's own e-mail, a person of its own
    ])
    identity.transform()
    a1, a2 = (person_id(f"client_id:{c}") for c in ("a1", "a2"))
    assert identity.person_of("a2") == {a2}
    assert identity.scalar("select count(*) from crm.user_id_history") == 0

    identity.ingest([
        _order("04 09:00", "a1", "O-A1", email=email),  # the same e-mail on a1: one person
        # a3's very first event carries the e-mail: it never was anyone else
        _order("05 09:00", "a3", "O-A3", email=email),
    ])
    identity.transform()
    assert identity.person_of("a2") == identity.person_of("a3") == {a1}
    history = "select old_user_id::text, new_user_id::text, changed_at::text, reason " \
              "from crm.user_id_history order by changed_at, old_user_id"
    assert identity.rows(history) == [
        (a2, a1, "2026-09-04 09:00:00+00", "anonymous_visitors_merged")]
    # what was keyed on a2's old id (a ledger row, a list) reaches the live person in one hop
    assert identity.rows(
        "select u.user_id::text from crm.user_id_history h "
        "join crm.users u on u.user_id = h.new_user_id where h.old_user_id = %s", a2) == [(a1,)]

    # a1 logs in later: both old ids now lead straight to the account
    identity.ingest([ev("user_login", "06 09:00", client_id="a1", user_id="ACC")])
    identity.transform()
    account = person_id("account:ACC")
    assert {old: new for old, new, _, _ in identity.rows(history)} == {a1: account, a2: account}
    assert identity.scalar("select count(*) from crm.user_id_history h left join crm.users u "
                           "on u.user_id = h.new_user_id where u.user_id is null") == 0

    incremental = identity.snapshot()
    identity.transform(full_refresh=True)
    assert identity.snapshot() == incremental
