"""Send what the ledger says is due and settle each row; dead tokens go to
push.token_invalidations so every later plan (and crm.push_tokens) leaves them out."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Protocol

import psycopg

from push.fcm import SendResult
from push.ledger import due, settle


class Sender(Protocol):
    async def send(self, token: str, title: str, body: str, data: dict[str, str]) -> SendResult: ...


async def deliver(
    conn: psycopg.Connection,
    campaign: str,
    run_id: str,
    now: datetime,
    senders: dict[str, Sender],
    batch: int = 500,
) -> dict[str, int]:
    """Send due rows in batches; each row is settled right after its own send, so a run killed
    half-way leaves only unsent rows 'planned' for the next run."""
    totals = {"sent": 0, "failed": 0}
    rows = due(conn, campaign, run_id, now)
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]

        async def one(row: tuple) -> tuple[tuple, SendResult]:
            delivery_id, _person, channel, token, title, body = row
            sender = senders.get(channel)
            if sender is None:
                return row, SendResult("failed", f"no_sender:{channel}")
            data = {"delivery_id": str(delivery_id), "campaign": campaign}
            return row, await sender.send(token, title, body, data)

        for row, result in await asyncio.gather(*(one(r) for r in chunk)):
            settle(conn, row[0], result.status, result.reason)
            totals[result.status] += 1
            if result.dead_token:
                conn.execute(
                    """INSERT INTO push.token_invalidations (push_token, service, reason,
                           delivery_id) VALUES (%s, %s, %s, %s)
                       ON CONFLICT (push_token) DO NOTHING""",
                    (row[3], row[2], result.reason, row[0]),
                )
    return totals
