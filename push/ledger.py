"""The delivery ledger (push.deliveries): plan before sending, then settle each row once.

Planning inserts with ON CONFLICT DO NOTHING on (campaign, run_id, person_id), so re-running a
plan adds nothing; senders only take rows still 'planned' and settle them with a guarded
UPDATE (status = 'planned'), so a resumed run never settles a row twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import psycopg


@dataclass(frozen=True)
class PlannedPush:
    person_id: str
    channel: str | None
    push_token: str | None
    send_at: datetime
    expires_at: datetime
    title: str
    body: str
    skip_reason: str | None = None  # guardrail that already decided this row


def plan(conn: psycopg.Connection, campaign: str, run_id: str, rows: list[PlannedPush]) -> int:
    """Write the plan; returns how many rows were new (0 on a re-run)."""
    opted_out = {
        r[0]
        for r in conn.execute(
            "SELECT person_id FROM push.opt_outs WHERE person_id = ANY(%s)",
            ([r.person_id for r in rows],),
        )
    }
    new = 0
    with conn.transaction():
        for r in rows:
            reason = "opted_out" if r.person_id in opted_out else r.skip_reason
            cur = conn.execute(
                """INSERT INTO push.deliveries (campaign, run_id, person_id, channel, push_token,
                       send_at, expires_at, title, body, status, reason, finished_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                           CASE WHEN %s::text IS NULL THEN NULL ELSE now() END)
                   ON CONFLICT (campaign, run_id, person_id) DO NOTHING""",
                (
                    campaign,
                    run_id,
                    r.person_id,
                    r.channel,
                    r.push_token,
                    r.send_at,
                    r.expires_at,
                    r.title,
                    r.body,
                    "skipped" if reason else "planned",
                    reason,
                    reason,
                ),
            )
            new += cur.rowcount
    return new


def due(conn: psycopg.Connection, campaign: str, run_id: str, now: datetime) -> list[tuple]:
    """Rows still to send whose time has come: (delivery_id, person_id, channel, token, title,
    body). Expired rows are settled as skipped('expired') on the way."""
    conn.execute(
        """UPDATE push.deliveries SET status = 'skipped', reason = 'expired', finished_at = now()
           WHERE campaign = %s AND run_id = %s AND status = 'planned' AND expires_at <= %s""",
        (campaign, run_id, now),
    )
    return conn.execute(
        """SELECT delivery_id, person_id, channel, push_token, title, body FROM push.deliveries
           WHERE campaign = %s AND run_id = %s AND status = 'planned' AND send_at <= %s
           ORDER BY delivery_id""",
        (campaign, run_id, now),
    ).fetchall()


def settle(
    conn: psycopg.Connection, delivery_id: UUID, status: str, reason: str | None = None
) -> bool:
    """Move one planned row to sent/failed/skipped; False if it was already settled."""
    cur = conn.execute(
        """UPDATE push.deliveries SET status = %s, reason = %s, finished_at = now()
           WHERE delivery_id = %s AND status = 'planned'""",
        (status, reason, delivery_id),
    )
    return cur.rowcount == 1


def counts(conn: psycopg.Connection, campaign: str, run_id: str) -> dict[str, int]:
    rows = conn.execute(
        """SELECT status, count(*) FROM push.deliveries WHERE campaign = %s AND run_id = %s
           GROUP BY status""",
        (campaign, run_id),
    ).fetchall()
    return {status: n for status, n in rows}
