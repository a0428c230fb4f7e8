"""The delivery ledger (push.deliveries): plan before sending, then settle each row once.

Planning inserts with ON CONFLICT DO NOTHING on (campaign, run_id, person_id, device), so
re-running a plan adds nothing; senders claim rows still 'planned' (attempts + 1, committed
before the send) and settle them with a guarded UPDATE (status = 'planned'), so a resumed run
never settles a row twice and knows which rows were in flight when it stopped.
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
    device: int = 0  # > 0 only for the extra devices of an all-devices campaign


def plan(conn: psycopg.Connection, campaign: str, run_id: str, rows: list[PlannedPush]) -> int:
    """Write the plan; returns how many rows were new (0 on a re-run)."""
    opted_out = {
        r[0]
        for r in conn.execute(
            "SELECT person_id FROM push.opt_outs WHERE person_id = ANY(%s)",
            ([r.person_id for r in rows],),
        )
    }
    params = [
        (
            campaign,
            run_id,
            r.person_id,
            r.device,
            r.channel,
            r.push_token,
            r.send_at,
            r.expires_at,
            r.title,
            r.body,
            "skipped" if reason else "planned",
            reason,
            reason,
        )
        for r in rows
        for reason in ["opted_out" if r.person_id in opted_out else r.skip_reason]
    ]
    with conn.transaction(), conn.cursor() as cur:
        # executemany pipelines the inserts: one round trip per batch, not per row
        cur.executemany(
            """INSERT INTO push.deliveries (campaign, run_id, person_id, device, channel,
                   push_token, send_at, expires_at, title, body, status, reason, finished_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                       CASE WHEN %s::text IS NULL THEN NULL ELSE now() END)
               ON CONFLICT (campaign, run_id, person_id, device) DO NOTHING""",
            params,
        )
        new = max(cur.rowcount, 0)
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


CLAIM = """UPDATE push.deliveries SET attempts = attempts + 1, attempted_at = now()
           WHERE delivery_id = ANY(%s) AND status = 'planned' RETURNING delivery_id"""
SETTLE_MANY = """UPDATE push.deliveries d SET status = v.status, reason = v.reason,
                     finished_at = now()
           FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS v(delivery_id, status, reason)
           WHERE d.delivery_id = v.delivery_id AND d.status = 'planned'"""


def claim(conn: psycopg.Connection, delivery_ids: list[UUID]) -> set[UUID]:
    """Mark rows as being sent (attempts + 1) in their own commit before the send; returns
    the ids still planned (another process may have settled some meanwhile)."""
    return {r[0] for r in conn.execute(CLAIM, (delivery_ids,)).fetchall()}


async def claim_async(conn: psycopg.AsyncConnection, delivery_ids: list[UUID]) -> set[UUID]:
    """claim() on an async connection (autocommit: committed when it returns)."""
    cur = await conn.execute(CLAIM, (delivery_ids,))
    return {r[0] for r in await cur.fetchall()}


def _columns(results: list[tuple[UUID, str, str | None]]) -> tuple[list, list, list]:
    ids, statuses, reasons = (list(x) for x in zip(*results, strict=True))
    return ids, statuses, reasons


def settle_many(conn: psycopg.Connection, results: list[tuple[UUID, str, str | None]]) -> int:
    """Settle several planned rows in one commit: (delivery_id, status, reason) each."""
    if not results:
        return 0
    return conn.execute(SETTLE_MANY, _columns(results)).rowcount


async def settle_many_async(conn: psycopg.AsyncConnection,
                            results: list[tuple[UUID, str, str | None]]) -> int:
    """settle_many() on an async connection (in the caller's transaction, if any)."""
    if not results:
        return 0
    return (await conn.execute(SETTLE_MANY, _columns(results))).rowcount


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
