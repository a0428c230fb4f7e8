"""Send what the ledger says is due and settle each row; dead tokens go to
push.token_invalidations so every later plan (and crm.push_tokens) leaves them out.

Rows go through a pipeline: claimed in small groups (attempts + 1, committed before their
send), sent concurrently (the sender bounds its own connections), and settled in small
commits as their answers arrive - never later than `settle_every` seconds after the answer.
A run killed half-way leaves its unsent rows 'planned'; the only rows a resumed run can send a
second time are the ones whose answer had arrived but whose settle had not been committed,
and those carry the same delivery id, which the notification uses as its collapse key.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import datetime
from typing import Protocol

import psycopg

from push.ledger import claim, due, settle_many
from push.retries import SendResult


class Sender(Protocol):
    async def send(self, token: str, title: str, body: str, data: dict[str, str]) -> SendResult: ...


def _flush(conn: psycopg.Connection, done: list[tuple[tuple, SendResult]]) -> None:
    if not done:
        return
    with conn.transaction():
        settle_many(conn, [(row[0], res.status, res.reason) for row, res in done])
        dead = [(row[3], row[2], res.reason, row[0]) for row, res in done if res.dead_token]
        if dead:
            conn.cursor().executemany(
                """INSERT INTO push.token_invalidations (push_token, service, reason,
                       delivery_id) VALUES (%s, %s, %s, %s)
                   ON CONFLICT (push_token) DO NOTHING""",
                dead,
            )
    done.clear()


async def deliver(
    conn: psycopg.Connection,
    campaign: str,
    run_id: str,
    now: datetime,
    senders: dict[str, Sender],
    batch: int = 500,
    settle_every: float = 0.005,
    window: int = 256,
) -> dict[str, int]:
    """Send the run's due rows; returns how many were sent and failed by this call.

    At most `window` rows are claimed and not yet settled at any moment; answers are
    committed in groups, at the latest `settle_every` seconds after the group's first (or
    at `batch` answers): each commit blocks the event loop, so fewer, larger ones keep the
    sends flowing, and the group is all a kill can leave answered but unsettled."""
    totals = {"sent": 0, "failed": 0}
    rows = deque(due(conn, campaign, run_id, now))
    claimed: deque[tuple] = deque()
    answers: asyncio.Queue[tuple[tuple, SendResult]] = asyncio.Queue()
    done: list[tuple[tuple, SendResult]] = []
    in_flight = 0
    last_flush = time.monotonic()

    async def one(row: tuple) -> None:
        delivery_id, _person, channel, token, title, body = row
        sender = senders.get(channel)
        try:
            if sender is None:
                result = SendResult("failed", f"no_sender:{channel}")
            else:
                data = {"delivery_id": str(delivery_id), "campaign": campaign}
                result = await sender.send(token, title, body, data)
        except Exception as exc:  # a sender bug must not leave the row claimed forever
            result = SendResult("failed", f"error:{type(exc).__name__}")
        answers.put_nowait((row, result))

    tasks: set[asyncio.Task] = set()
    while rows or claimed or in_flight:
        while in_flight < window and (claimed or rows):
            if not claimed:
                group = [rows.popleft() for _ in range(min(len(rows), window // 2 or 1))]
                ok = claim(conn, [r[0] for r in group])
                claimed.extend(r for r in group if r[0] in ok)
                continue
            task = asyncio.create_task(one(claimed.popleft()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            in_flight += 1
        if not in_flight:
            break
        if not done:  # nothing waits for a commit: sleep until an answer arrives
            item = await answers.get()
        else:
            wait = max(0.0, settle_every - (time.monotonic() - last_flush))
            try:
                item = await asyncio.wait_for(answers.get(), timeout=wait)
            except TimeoutError:
                item = None
        got = [item] if item else []
        while not answers.empty():
            got.append(answers.get_nowait())
        for row, result in got:
            in_flight -= 1
            totals[result.status] += 1
            done.append((row, result))
        if done and (len(done) >= batch or not in_flight
                     or time.monotonic() - last_flush >= settle_every):
            _flush(conn, done)
            last_flush = time.monotonic()
    _flush(conn, done)
    return totals
