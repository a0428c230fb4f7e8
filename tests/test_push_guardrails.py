"""Quiet hours across zones and DST, and frequency caps."""

from datetime import UTC, datetime, timedelta

from push.guardrails import cap_reached, in_quiet_hours, next_allowed


def test_quiet_hours_follow_the_local_zone() -> None:
    at = datetime(2026, 6, 1, 21, 30, tzinfo=UTC)
    assert in_quiet_hours(at, "Europe/Berlin")  # 23:30 local
    assert not in_quiet_hours(at, "America/New_York")  # 17:30 local
    assert in_quiet_hours(at, "Asia/Tokyo")  # 06:30 local
    assert not in_quiet_hours(at, "UTC")  # 21:30


def test_quiet_hours_across_dst() -> None:
    # 21:30 UTC is 22:30 in Berlin in winter (CET) but 23:30 in summer (CEST);
    # 20:30 UTC is quiet only in summer.
    winter = datetime(2026, 1, 15, 20, 30, tzinfo=UTC)
    summer = datetime(2026, 7, 15, 20, 30, tzinfo=UTC)
    assert not in_quiet_hours(winter, "Europe/Berlin")
    assert in_quiet_hours(summer, "Europe/Berlin")
    # The night DST starts (29 March 2026) the wake-up is 08:00 CEST = 06:00 UTC.
    night = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert next_allowed(night, "Europe/Berlin") == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    # The night DST ends (25 October 2026) the wake-up is 08:00 CET = 07:00 UTC.
    night = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)
    assert next_allowed(night, "Europe/Berlin") == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)


def test_next_allowed_leaves_daytime_alone() -> None:
    at = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert next_allowed(at, "Europe/Berlin") == at


def test_caps_day_and_week() -> None:
    now = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    assert cap_reached([], now) is None
    assert cap_reached([now - timedelta(hours=3)], now) == "cap_day"
    assert cap_reached([now - timedelta(hours=25)], now) is None
    three = [now - timedelta(days=d) for d in (2, 3, 4)]
    assert cap_reached(three, now) == "cap_week"
    assert cap_reached(three, now, per_week=4) is None
    assert cap_reached([now - timedelta(days=8)] * 5, now) is None
