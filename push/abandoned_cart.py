"""Abandoned checkouts (tracking plan 4.1 / 4.3) read straight from raw.events for freshness:
the marts are rebuilt hourly, a cart reminder must react within minutes. Events carry the
shop's account id; the ledger and push tokens use the person id, mapped through crm.users
(`external_user_id`), so an account first seen since the last dbt build waits for the next."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg

CHECKOUT_EVENTS = ("checkout_start", "checkout_abandonment")
PURCHASE_EVENTS = ("order_complete", "payment_success")


@dataclass(frozen=True)
class AbandonedCart:
    person_id: str
    checkout_at: dt.datetime
    total_price: float | None


# Latest checkout per person inside the lookback, old enough, with no purchase after it.
_FIND = """
WITH last_checkout AS (
    SELECT DISTINCT ON (user_id) user_id, event_ts,
           (payload ->> 'total_price')::numeric AS total_price
    FROM raw.events
    WHERE event_type = ANY(%(checkout)s) AND user_id IS NOT NULL
      AND event_ts >= %(since)s AND event_ts <= %(now)s
    ORDER BY user_id, event_ts DESC
)
SELECT u.user_id::text, c.event_ts, c.total_price
FROM last_checkout c
JOIN crm.users u ON u.external_user_id = c.user_id
WHERE c.event_ts <= %(cutoff)s
  AND NOT EXISTS (
      SELECT 1 FROM raw.events o
      WHERE o.user_id = c.user_id AND o.event_type = ANY(%(purchase)s)
        AND o.event_ts >= c.event_ts AND o.event_ts >= %(since)s)
ORDER BY 1
"""

# A planned reminder whose person bought after their latest checkout before it was planned.
_CANCEL = """
UPDATE push.deliveries d
SET status = 'skipped', reason = 'purchased', finished_at = %(now)s
WHERE d.campaign = %(campaign)s AND d.status = 'planned' AND d.attempts = 0
  AND EXISTS (
      SELECT 1 FROM crm.users u JOIN raw.events o ON o.user_id = u.external_user_id
      WHERE u.user_id::text = d.person_id AND o.event_type = ANY(%(purchase)s)
        AND o.event_ts <= %(now)s
        AND o.event_ts >= coalesce(
            (SELECT max(c.event_ts) FROM raw.events c
             WHERE c.user_id = u.external_user_id AND c.event_type = ANY(%(checkout)s)
               AND c.event_ts <= d.planned_at AND c.event_ts >= d.planned_at - %(lookback)s),
            d.planned_at))
"""


def _check(min_age: dt.timedelta, lookback: dt.timedelta) -> None:
    if min_age < dt.timedelta(0):
        raise ValueError(f"min_age must not be negative, got {min_age}")
    if lookback <= min_age:
        raise ValueError(f"lookback ({lookback}) must be longer than min_age ({min_age})")


def find_abandoned_carts(conn: psycopg.Connection, now: dt.datetime | None = None,
                         min_age: dt.timedelta = dt.timedelta(hours=1),
                         lookback: dt.timedelta = dt.timedelta(days=3)) -> list[AbandonedCart]:
    """People whose latest checkout is at least `min_age` old and who have not bought since."""
    _check(min_age, lookback)
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    rows = conn.execute(_FIND, {"checkout": list(CHECKOUT_EVENTS),
                                "purchase": list(PURCHASE_EVENTS), "since": now - lookback,
                                "now": now, "cutoff": now - min_age}).fetchall()
    return [AbandonedCart(r[0], r[1], float(r[2]) if r[2] is not None else None) for r in rows]


def cancel_purchased(conn: psycopg.Connection, campaign: str, now: dt.datetime | None = None,
                     lookback: dt.timedelta = dt.timedelta(days=3)) -> int:
    """Marks still-planned reminders of `campaign` skipped ('purchased') for people who bought
    after their checkout; returns how many. Only unclaimed 'planned' rows change (attempts = 0),
    so a reminder a sender has already claimed is left to it."""
    now = now or dt.datetime.now(dt.UTC)
    cur = conn.execute(_CANCEL, {"campaign": campaign, "now": now, "lookback": lookback,
                                 "purchase": list(PURCHASE_EVENTS),
                                 "checkout": list(CHECKOUT_EVENTS)})
    return cur.rowcount


# Carts whose person already has a row of the campaign planned since that checkout (sent,
# waiting, or skipped by a guardrail): one reminder per abandoned checkout, however often the
# trigger looks.
_REMINDED = """
SELECT c.person_id
FROM unnest(%(people)s::text[], %(at)s::timestamptz[]) AS c(person_id, checkout_at)
WHERE EXISTS (SELECT 1 FROM push.deliveries d
              WHERE d.campaign = %(campaign)s AND d.person_id = c.person_id
                AND d.planned_at >= c.checkout_at)
"""


def already_reminded(conn: psycopg.Connection, campaign: str,
                     carts: list[AbandonedCart]) -> set[str]:
    """People of `carts` with a row of `campaign` planned at or after their checkout."""
    if not carts:
        return set()
    return {r[0] for r in conn.execute(_REMINDED, {
        "campaign": campaign, "people": [c.person_id for c in carts],
        "at": [c.checkout_at for c in carts]})}


def reminders_due(conn: psycopg.Connection, campaign: str, now: dt.datetime | None = None,
                  min_age: dt.timedelta = dt.timedelta(hours=1),
                  lookback: dt.timedelta = dt.timedelta(days=3)) -> list[AbandonedCart]:
    """Abandoned carts (find_abandoned_carts) not yet reminded by `campaign`: who a run of
    the abandoned-cart campaign should plan now."""
    carts = find_abandoned_carts(conn, now, min_age, lookback)
    done = already_reminded(conn, campaign, carts)
    return [c for c in carts if c.person_id not in done]


def not_yet_reminded(conn: psycopg.Connection, campaign: str, people: list[str],
                     lookback: dt.timedelta = dt.timedelta(days=3),
                     now: dt.datetime | None = None) -> list[str]:
    """Of `people` (a trigger's, e.g. the sensor's), those without a row of `campaign` planned
    since their latest checkout within the lookback; people without such a checkout are kept
    (the caller named them; planning and cancel_purchased decide)."""
    if not people:
        return []
    now = now or dt.datetime.now(dt.UTC)
    rows = conn.execute(
        """SELECT u.user_id::text, max(e.event_ts)
           FROM crm.users u JOIN raw.events e ON e.user_id = u.external_user_id
           WHERE u.user_id::text = ANY(%s) AND e.event_type = ANY(%s)
             AND e.event_ts >= %s AND e.event_ts <= %s
           GROUP BY 1""",
        (list(people), list(CHECKOUT_EVENTS), now - lookback, now),
    ).fetchall()
    carts = [AbandonedCart(pid, at, None) for pid, at in rows]
    done = already_reminded(conn, campaign, carts)
    return [p for p in people if p not in done]
