"""Campaign planning on a real PostgreSQL: audiences, personalised messages, send times with
quiet hours in each person's zone (DST included), caps across campaigns, one device per
person, opt-outs and invalid tokens. The people are inserted directly (tests/push_shop.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from push.audience import AudienceError, build_audience
from push.ledger import PlannedPush, plan, settle
from push.message import MessageTemplateError
from push.planner import allowed_hour, best_window, plan_campaign, window_full
from push.run import run_campaign
from tests.push_shop import Shop, campaign, shop_fixture  # noqa: F401  (the `shop` fixture)
from tests.warehouse import person_id

# 2026-03-29 is the night Europe changes to summer time (02:00 CET -> 03:00 CEST).
DST_NIGHT = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


def _rows(shop: Shop, c, now: datetime, people: list[str] | None = None) -> dict:
    planned = plan_campaign(shop.conn, c, "r1", now, build_audience(shop.conn, c, people))
    return {r.person_id: r for r in planned.rows}


def test_quiet_hours_in_each_zone_with_dst(shop: Shop) -> None:
    berlin = shop.person("berlin", "Europe/Berlin", (("tb", "android"),))
    york = shop.person("york", "America/New_York", (("ty", "android"),))
    tokyo = shop.person("tokyo", "Asia/Tokyo", (("tt", "ios"),))
    rows = _rows(shop, campaign(), DST_NIGHT)
    # 01:30 in Berlin: quiet until 08:00 local, which is summer time already (06:00 UTC)
    assert rows[berlin].send_at == datetime(2026, 3, 29, 6, tzinfo=UTC)
    assert rows[berlin].skip_reason is None
    # 20:30 in New York (summer time since 8 March) and 09:30 in Tokyo: now
    assert rows[york].send_at == DST_NIGHT and rows[tokyo].send_at == DST_NIGHT
    assert rows[tokyo].channel == "apns" and rows[york].channel == "fcm"
    # the same night with a 3-hour expiry: Berlin's 08:00 is past it, a skip with its reason
    short = _rows(shop, campaign(expiry_hours=3), DST_NIGHT)
    assert short[berlin].skip_reason == "quiet_hours"
    assert short[york].skip_reason is None
    # in winter 08:00 Berlin is 07:00 UTC
    winter = _rows(shop, campaign(), datetime(2026, 1, 10, 0, 30, tzinfo=UTC))
    assert winter[berlin].send_at == datetime(2026, 1, 10, 7, tzinfo=UTC)


def test_best_window_within_24_hours(shop: Shop) -> None:
    evening = shop.person("evening", "Europe/Berlin", (("t1", "android"),))
    late = shop.person("late", "Europe/Berlin", (("t2", "android"),))
    unknown = shop.person("unknown", "Asia/Tokyo", (("t3", "android"),))
    shop.execute("INSERT INTO ml.user_send_windows VALUES (%s, 19, 'android', 't1'), "
                 "(%s, 23, 'android', 't2')", evening, late)
    rows = _rows(shop, campaign(send_time="best_window"), DST_NIGHT)
    # 19:00 CEST on the day summer time starts is 17:00 UTC
    assert rows[evening].send_at == datetime(2026, 3, 29, 17, tzinfo=UTC)
    # 23:00 is in quiet hours: the nearest allowed hour, 21:00 CEST
    assert rows[late].send_at == datetime(2026, 3, 29, 19, tzinfo=UTC)
    # no learned hour: now (09:30 in Tokyo, outside quiet hours)
    assert rows[unknown].send_at == DST_NIGHT
    # the hour has passed today: tomorrow's
    after = datetime(2026, 3, 29, 18, tzinfo=UTC)
    assert best_window(after, "Europe/Berlin", 19) == datetime(2026, 3, 30, 17, tzinfo=UTC)
    assert best_window(after, "Europe/Berlin", 20) == after  # it is 20:xx there now
    assert allowed_hour(23, 22, 8) == 21 and allowed_hour(5, 22, 8) == 8
    assert allowed_hour(12, 22, 8) == 12


def _sent(shop: Shop, name: str, pid: str, at: datetime, status: str = "sent") -> None:
    row = PlannedPush(pid, "fcm", "tok", at, at + timedelta(hours=12), "t", "b")
    plan(shop.conn, name, f"run-{at.isoformat()}", [row])
    if status == "sent":
        (did,) = shop.execute("SELECT delivery_id FROM push.deliveries WHERE campaign = %s "
                              "AND person_id = %s AND send_at = %s", name, pid, at)[0]
        assert settle(shop.conn, did, "sent")
        shop.execute("UPDATE push.deliveries SET finished_at = send_at WHERE delivery_id = %s",
                     did)


def test_caps_count_every_campaign_sent_or_planned(shop: Shop) -> None:
    now = datetime(2026, 6, 10, 12, tzinfo=UTC)
    today, week, later, free, moved = (
        shop.person(n, "UTC", ((f"tok-{n}", "android"),))
        for n in ("today", "week", "later", "free", "moved")
    )
    _sent(shop, "other", today, now - timedelta(hours=3))
    for days in (2, 3, 5):
        _sent(shop, f"other{days}", week, now - timedelta(days=days))
    _sent(shop, "tonight", later, now + timedelta(hours=5), status="planned")
    _sent(shop, "old", free, now - timedelta(days=8))
    # a push sent under an id that an identity change has replaced counts for the person
    old_id = person_id("moved-before-login")
    shop.execute("INSERT INTO crm.user_id_history VALUES (%s, %s)", old_id, moved)
    _sent(shop, "other", old_id, now - timedelta(hours=1))
    rows = _rows(shop, campaign(), now)
    assert rows[today].skip_reason == "cap_day"
    assert rows[week].skip_reason == "cap_week"
    assert rows[later].skip_reason == "cap_day"  # a push planned for tonight counts now
    assert rows[free].skip_reason is None
    assert rows[moved].skip_reason == "cap_day"
    # the campaign's own caps: 2 a day lets "today" through
    loose = _rows(shop, campaign(guardrails={"per_day": 2, "per_week": 5}), now)
    assert loose[today].skip_reason is None and loose[week].skip_reason is None


def test_window_counts_both_sides() -> None:
    at = datetime(2026, 6, 10, 12, tzinfo=UTC)
    day = timedelta(days=1)
    assert not window_full([], at, day, 1)
    assert window_full([at - timedelta(hours=23)], at, day, 1)
    assert window_full([at + timedelta(hours=23)], at, day, 1)
    assert not window_full([at - timedelta(hours=25)], at, day, 1)
    # two pushes 30 hours apart: each alone within a day of `at`, never two in one window
    two = [at - timedelta(hours=15), at + timedelta(hours=15)]
    assert not window_full(two, at, day, 2)
    assert window_full([*two, at + timedelta(hours=1)], at, day, 2)


def test_one_push_per_person_unless_all_devices(shop: Shop) -> None:
    now = datetime(2026, 6, 10, 12, tzinfo=UTC)
    # newest first: web, then android, then ios; the model picked the ios one
    many = shop.person("many", "UTC", (("w-many", "web"), ("a-many", "android"),
                                       ("i" * 64, "ios")))
    dead_pick = shop.person("deadpick", "UTC", (("w-dp", "web"), ("a-dp", "android")))
    shop.execute("INSERT INTO ml.user_send_windows VALUES (%s, 12, 'ios', %s), "
                 "(%s, 12, 'android', 'a-dp')", many, "i" * 64, dead_pick)
    shop.execute("INSERT INTO push.token_invalidations (push_token, service, reason) "
                 "VALUES ('a-dp', 'fcm', 'unregistered')")
    c = campaign()
    audience = build_audience(shop.conn, c)
    assert sorted((r.person_id, r.push_token) for r in audience.recipients) == sorted(
        [(many, "i" * 64), (dead_pick, "w-dp")]  # the model's, else the newest valid one
    )
    planned = plan_campaign(shop.conn, c, "r1", now, audience)
    assert [r.channel for r in planned.rows if r.person_id == many] == ["apns"]
    every = campaign(guardrails={"all_devices": True})
    rows = plan_campaign(shop.conn, every, "r2", now, build_audience(shop.conn, every)).rows
    mine = sorted((r.device, r.push_token) for r in rows if r.person_id == many)
    assert mine == [(0, "w-many"), (1, "a-many"), (2, "i" * 64)]
    assert plan(shop.conn, "every", "r2", rows) == 4 and plan(shop.conn, "every", "r2", rows) == 0
    # the three-device push counts once for the caps: with 2 a day, one more is allowed
    loose = campaign(name="second", guardrails={"per_day": 2})
    again = _rows(shop, loose, now + timedelta(hours=1))
    assert again[many].skip_reason is None
    strict = _rows(shop, campaign(name="second"), now + timedelta(hours=1))
    assert strict[many].skip_reason == "cap_day"


def test_opt_outs_and_invalid_tokens_are_skips(shop: Shop) -> None:
    now = datetime(2026, 6, 10, 12, tzinfo=UTC)
    out = shop.person("optout", "UTC", (("t-out", "android"),))
    moved = shop.person("moved", "UTC", (("t-moved", "android"),))
    stale = shop.person("stale", "UTC")
    shop.execute("INSERT INTO crm.push_tokens VALUES (%s, 't-stale', 'android', now(), false)",
                 stale)
    dead = shop.person("dead", "UTC", (("t-dead", "ios"),))
    shop.execute("INSERT INTO push.token_invalidations (push_token, service, reason) "
                 "VALUES ('t-dead', 'apns', 'unregistered')")
    fine = shop.person("fine", "UTC", (("t-fine", "web"),))
    old = person_id("moved-anonymous")
    shop.execute("INSERT INTO crm.user_id_history VALUES (%s, %s)", old, moved)
    shop.execute("INSERT INTO push.opt_outs (person_id) VALUES (%s), (%s)", out, old)
    summary = run_campaign(shop.url, campaign(), now=now, senders={}, run_id="r1")
    reasons = dict(shop.execute("SELECT person_id, coalesce(reason, status) FROM push.deliveries "
                                "WHERE campaign = 'test_campaign'"))
    assert reasons == {out: "opted_out", moved: "opted_out", stale: "no_valid_token",
                       dead: "no_valid_token", fine: "no_sender:fcm"}
    assert summary.line() == "sent=0 skipped=4 failed=1"


def test_audience_filters_follow_identity_changes(shop: Shop) -> None:
    buyer = shop.person("buyer", "UTC", (("t-b", "android"),), orders=3, monetary=120)
    lapsing = shop.person("lapsing", "UTC", (("t-l", "android"),), orders=1, monetary=20)
    visitor = shop.person("visitor", "UTC", (("t-v", "android"),))
    old = person_id("buyer-before-login")
    shop.execute("INSERT INTO crm.user_id_history VALUES (%s, %s)", old, buyer)
    shop.execute("INSERT INTO ml.user_segments VALUES (%s, 'high_value', 'rule'), "
                 "(%s, 'mobile_app_user', 'rule'), (%s, 'mobile_app_user', 'rule')",
                 old, lapsing, visitor)
    shop.execute("INSERT INTO ml.user_lifecycle VALUES (%s, 0.9), (%s, 0.3)", old, lapsing)

    def who(**audience) -> set[str]:
        found = build_audience(shop.conn, campaign(audience=audience))
        return {r.person_id for r in found.recipients}

    assert who(segments=["high_value"]) == {buyer}  # the model saw the old id
    assert who(lifecycle=["active"]) == {buyer}
    assert who(lifecycle=["lapsing", "prospect"]) == {lapsing, visitor}
    assert who(features={"orders": {"min": 1}}) == {buyer, lapsing}
    assert who(features={"monetary": {"max": 50}}, segments=["mobile_app_user"]) == {
        lapsing, visitor}
    with pytest.raises(AudienceError, match=r"audience.segments: unknown segment.*'vip'"):
        who(segments=["vip"])
    with pytest.raises(AudienceError, match=r"audience.lifecycle: unknown stage.*'sleepy'"):
        who(lifecycle=["sleepy"])
    with pytest.raises(AudienceError, match=r"audience.features.shoe_size: .*no numeric"):
        who(features={"shoe_size": {"min": 40}})
    with pytest.raises(AudienceError, match=r"audience.features.timezone: .*no numeric"):
        who(features={"timezone": {"min": 1}})


def test_messages_personalised_in_the_persons_language(shop: Shop) -> None:
    now = datetime(2026, 6, 10, 12, tzinfo=UTC)
    de = shop.person("de", "UTC", (("t-de", "android"),))
    en = shop.person("en", "UTC", (("t-en", "android"),))
    none = shop.person("none", "UTC", (("t-none", "android"),))
    shop.execute("INSERT INTO crm.dim_products VALUES ('p1', 'Mug', 9.5, 'kitchen'), "
                 "('p2', 'Teapot', 24, 'kitchen'), ('p3', NULL, 1, NULL)")
    shop.execute("INSERT INTO ml.user_recommendations VALUES (%s, 1, 'p3'), (%s, 2, 'p2'), "
                 "(%s, 3, 'p1'), (%s, 1, 'p1')", de, de, de, en)
    shop.execute("INSERT INTO crm.client_ids VALUES (%s, 'cid-de')", de)
    shop.execute(
        """INSERT INTO raw.events (event_id, event_type, event_ts, received_at, client_id,
               source, payload, received_day) VALUES (gen_random_uuid(), 'page_view', now(),
               now(), 'cid-de', 'test', '{"language": "de-DE"}', (now() AT TIME ZONE 'UTC')::date)
            """)
    c = campaign(message={
        "title": "Picked for you: {product_name}", "body": "{product_name} for {price}",
        "translations": {"de": {"title": "Für Sie: {product_name}",
                                "body": "{product_name} für {price}"}}})
    rows = _rows(shop, c, now)
    assert (rows[de].title, rows[de].body) == ("Für Sie: Teapot", "Teapot für 24.00")
    assert (rows[en].title, rows[en].body) == ("Picked for you: Mug", "Mug for 9.50")
    assert rows[none].skip_reason == "no_recommendation"
    bad = campaign(message={"title": "Hi {first_name}", "body": "x"})
    with pytest.raises(MessageTemplateError,
                       match=r"message.title: unknown template field\(s\) \{first_name\}"):
        _rows(shop, bad, now)
    bad_de = campaign(message={"title": "Hi", "body": "x",
                               "translations": {"de": {"body": "{prize}"}}})
    with pytest.raises(MessageTemplateError, match=r"translations.de.body: .*\{prize\}"):
        _rows(shop, bad_de, now)


def test_dry_run_writes_nothing(shop: Shop) -> None:
    now = datetime(2026, 6, 10, 12, tzinfo=UTC)
    for n in range(5):
        shop.person(f"p{n}", "UTC", ((f"t{n}", "android"),))
    shop.person("silent", "UTC")
    summary = run_campaign(shop.url, campaign(), now=now, dry_run=True)
    assert (summary.audience, summary.recipients, summary.to_send) == (6, 5, 5)
    assert summary.skips == {"no_valid_token": 1}
    assert summary.sample and summary.sample["title"] == "Hello"
    assert shop.execute("SELECT count(*) FROM push.deliveries") == [(0,)]


def test_a_triggered_campaign_needs_its_people(shop: Shop) -> None:
    a = shop.person("a", "UTC", (("t-a", "android"),))
    shop.person("b", "UTC", (("t-b", "android"),))
    c = campaign(audience={"trigger": "abandoned_cart"})
    with pytest.raises(AudienceError, match="abandoned_cart"):
        build_audience(shop.conn, c)
    assert [r.person_id for r in build_audience(shop.conn, c, [a]).recipients] == [a]
