"""Guardrails applied to each planned push: quiet hours in the person's zone and caps.

Pure functions over plain values, so the ledger planner and the tests share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_ZONE = "UTC"


def zone(name: str | None) -> ZoneInfo:
    """The person's zone; an unknown or missing zone falls back to UTC."""
    try:
        return ZoneInfo(name or DEFAULT_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_ZONE)


def in_quiet_hours(at: datetime, tz: str | None, start: int = 22, end: int = 8) -> bool:
    """True if `at` (aware) falls in [start, end) local hours; the window may wrap midnight.

    Converting through zoneinfo gives the wall clock on that date, so DST shifts are honoured.
    """
    hour = at.astimezone(zone(tz)).hour
    if start == end:
        return False
    return start <= hour or hour < end if start > end else start <= hour < end


def next_allowed(at: datetime, tz: str | None, start: int = 22, end: int = 8) -> datetime:
    """The first instant at or after `at` outside quiet hours (local `end`:00 on a DST day too)."""
    if not in_quiet_hours(at, tz, start, end):
        return at
    local = at.astimezone(zone(tz))
    day = local.date() if local.hour < end else local.date() + timedelta(days=1)
    wake = datetime(day.year, day.month, day.day, end, tzinfo=zone(tz))
    return wake.astimezone(at.tzinfo)


def cap_reached(
    sent_at: Sequence[datetime], at: datetime, per_day: int = 1, per_week: int = 3
) -> str | None:
    """'cap_day' / 'cap_week' if one more push at `at` would exceed a cap (rolling windows)."""
    day = sum(1 for t in sent_at if at - timedelta(days=1) < t <= at)
    week = sum(1 for t in sent_at if at - timedelta(days=7) < t <= at)
    if day >= per_day:
        return "cap_day"
    if week >= per_week:
        return "cap_week"
    return None
