"""Planning: the ledger rows of one campaign run, with every guardrail decided up front.

Each person gets a send time (now, or their best local hour within the next 24 hours), pushed
out of their quiet hours (their own zone, DST included) and skipped when that falls past the
campaign's expiry; frequency caps count the person's pushes of every campaign, sent or still
planned, within a rolling day and week around that time. A person the guardrails refuse is a
'skipped' row with its reason, so the ledger explains every person of the audience.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from push.audience import Audience, Recipient, _mapped
from push.campaign import Campaign
from push.guardrails import next_allowed, zone
from push.ledger import PlannedPush
from push.message import FIELDS, check_templates, render, top_products

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class Plan:
    rows: list[PlannedPush]

    def skips(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for r in self.rows:
            if r.skip_reason:
                out[r.skip_reason] += 1
        return dict(sorted(out.items()))

    def to_send(self) -> list[PlannedPush]:
        return [r for r in self.rows if not r.skip_reason]


def best_window(now: datetime, tz: str | None, hour: int | None) -> datetime:
    """The next start of the person's best local hour within 24 hours (now if it is that hour
    already); without a learned hour, now."""
    if hour is None:
        return now
    local = now.astimezone(zone(tz))
    if local.hour == hour:
        return now
    for days in (0, 1):
        d = local.date() + timedelta(days=days)
        # a wall-clock hour skipped by DST resolves to the instant just after the jump
        at = datetime(d.year, d.month, d.day, hour, tzinfo=zone(tz)).astimezone(now.tzinfo)
        if at > now:
            return at
    raise AssertionError("an hour of the day always recurs within 24 hours")


def allowed_hour(hour: int, quiet_start: int, quiet_end: int) -> int:
    """The best hour itself, or when it lies in quiet hours the nearest allowed hour (the last
    before they start or the first after they end; a tie goes to the morning)."""
    start, end = quiet_start, quiet_end
    quiet = (start <= hour or hour < end) if start > end else start <= hour < end
    if start == end or not quiet:
        return hour
    before, after = (start - 1) % 24, end

    def dist(a: int) -> int:
        return min((a - hour) % 24, (hour - a) % 24)

    return before if dist(before) < dist(after) else after


def window_full(times: Iterable[datetime], at: datetime, span: timedelta, limit: int) -> bool:
    """Would one more push at `at` put more than `limit` pushes into some window of length
    `span`? Windows before and after `at` count: a push planned for tonight caps one now."""
    near = sorted(t for t in times if abs(t - at) < span)
    if len(near) < limit:
        return False
    # a fullest window containing `at` can start at one of its pushes or at `at` itself
    starts = [t for t in near if t <= at] + [at]
    return any(sum(1 for t in near if s <= t < s + span) >= limit for s in starts)


def cap_reason(times: list[datetime], at: datetime, per_day: int, per_week: int) -> str | None:
    if window_full(times, at, DAY, per_day):
        return "cap_day"
    if window_full(times, at, WEEK, per_week):
        return "cap_week"
    return None


def other_pushes(
    conn: psycopg.Connection, campaign: str, run_id: str, people: list[str], now: datetime
) -> dict[str, list[datetime]]:
    """Each person's pushes of other runs and campaigns, sent or planned, near `now`: when
    they went out (sent) or are due (planned), under the person's current id."""
    person, join = _mapped("d.person_id")
    # one push per (campaign, run): an all-devices push to three phones counts once
    rows = conn.execute(
        f"""SELECT DISTINCT ON (d.campaign, d.run_id, {person}) {person},
                   CASE WHEN d.status = 'sent' THEN coalesce(d.finished_at, d.send_at)
                        ELSE d.send_at END
            FROM push.deliveries d {join}
            WHERE d.status IN ('sent', 'planned') AND NOT (d.campaign = %s AND d.run_id = %s)
              AND d.send_at > %s AND d.send_at < %s AND {person} = ANY(%s)""",
        (campaign, run_id, now - 2 * WEEK, now + 2 * WEEK, people),
    ).fetchall()
    out: dict[str, list[datetime]] = defaultdict(list)
    for pid, at in rows:
        out[pid].append(at)
    return out


def _skip(pid: str, now: datetime, expires: datetime, reason: str,
          r: Recipient | None = None) -> PlannedPush:
    return PlannedPush(pid, r.channel if r else None, r.push_token if r else None, now,
                       expires, None, None, reason)  # type: ignore[arg-type]


def plan_campaign(
    conn: psycopg.Connection, campaign: Campaign, run_id: str, now: datetime, audience: Audience
) -> Plan:
    """Ledger rows for the audience: one per person (per device with all_devices)."""
    uses = check_templates(campaign)
    needs_product = bool(uses & set(FIELDS))
    guard = campaign.guardrails
    expires = now + campaign.expiry
    by_person: dict[str, list[Recipient]] = defaultdict(list)
    for r in audience.recipients:
        by_person[r.person_id].append(r)
    people = sorted(by_person)
    products = top_products(conn, people) if needs_product else {}
    history = other_pushes(conn, campaign.name, run_id, people, now)
    rows = [_skip(pid, now, expires, reason) for pid, reason in sorted(audience.skipped.items())]
    for pid in people:
        first = by_person[pid][0]
        product = products.get(pid)
        if needs_product and product is None:
            rows.append(_skip(pid, now, expires, "no_recommendation", first))
            continue
        hour = first.best_local_hour
        if campaign.send_time == "best_window" and hour is not None:
            hour = allowed_hour(hour, guard.quiet_start, guard.quiet_end)
            wanted = best_window(now, first.timezone, hour)
        else:
            wanted = now
        at = next_allowed(wanted, first.timezone, guard.quiet_start, guard.quiet_end)
        if at >= expires:
            rows.append(_skip(pid, now, expires, "quiet_hours", first))
            continue
        reason = cap_reason(history.get(pid, []), at, guard.per_day, guard.per_week)
        if reason:
            rows.append(_skip(pid, at, expires, reason, first))
            continue
        title, body = render(campaign, first.language, product)
        # one row per device the audience chose: only the best one unless all_devices
        rows.extend(
            PlannedPush(pid, r.channel, r.push_token, at, expires, title, body, device=k)
            for k, r in enumerate(by_person[pid])
        )
    return Plan(rows)
