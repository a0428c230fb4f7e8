"""Send what the ledger says is due and settle each row; dead tokens go to
push.token_invalidations so every later plan (and crm.push_tokens) leaves them out.

Rows go through a pipeline on two async connections of their own, in the sending event loop:
a row is claimed (attempts + 1, committed) just before its send, and its answer is committed
as soon as it arrives - the settle connection commits whatever answers are waiting each time
its previous commit returns, so nothing waits on a timer and the event loop never blocks on
the database. At most `window` rows are claimed and unsettled at any moment.

What a kill can leave behind is bounded by the protocol, not by batching: the rows claimed but
not settled, i.e. the requests in flight (sent, answer not yet received) and the few answers
still in their commit. FCM and APNs have no idempotency key, so a request whose answer never
arrived cannot be known delivered; a resumed run sends those rows again with the same delivery
id, which the notification carries as its collapse key (FCM collapse_key/tag, APNs
apns-collapse-id), so the device shows it once. Every other row goes exactly once.

A stop asked for by a signal (push/stop.py) is different from a kill: no row is claimed after
it, and the answers of the requests in flight are awaited (up to `drain_timeout`, the
requests' own timeout) and committed, so nothing is left in doubt and a resumed run sends
each remaining row exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from datetime import datetime
from typing import Protocol

import psycopg

from push.ledger import claim_async, due, settle_many_async
from push.retries import SendResult
from push.stop import Stop


class Sender(Protocol):
    async def send(self, token: str, title: str, body: str, data: dict[str, str]) -> SendResult: ...


DEFAULT_WINDOW = 64
# how long a stopped run waits for the answers in flight: the senders' request timeout and
# a little more for the last commit
DRAIN_TIMEOUT = 12.0
INVALIDATE = """INSERT INTO push.token_invalidations (push_token, service, reason, delivery_id)
                VALUES (%s, %s, %s, %s) ON CONFLICT (push_token) DO NOTHING"""


async def _settle(conn: psycopg.AsyncConnection, done: list[tuple[tuple, SendResult]]) -> None:
    async with conn.transaction():
        await settle_many_async(conn, [(row[0], res.status, res.reason) for row, res in done])
        dead = [(row[3], row[2], res.reason, row[0]) for row, res in done if res.dead_token]
        if dead:
            async with conn.cursor() as cur:
                await cur.executemany(INVALIDATE, dead)


async def _connect(conn: psycopg.Connection) -> psycopg.AsyncConnection:
    """A new async connection to the database `conn` is connected to."""
    extra = {"password": conn.info.password} if conn.info.password else {}
    return await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True, **extra)


async def deliver(
    conn: psycopg.Connection,
    campaign: str,
    run_id: str,
    now: datetime,
    senders: dict[str, Sender],
    window: int | None = None,
    stop: Stop | None = None,
    drain_timeout: float = DRAIN_TIMEOUT,
) -> dict[str, int]:
    """Send the run's due rows; returns how many were sent and failed by this call.

    `window` (default: the largest `concurrency` among the senders, else 64) caps the rows
    claimed and not yet settled, so claimed rows are the requests in flight, not a queue.
    Once `stop` has a signal no row is claimed; the answers in flight are awaited for up to
    `drain_timeout` seconds and committed (a second signal, or the timeout, gives up on the
    rest: they stay claimed and 'planned', in doubt as after a kill)."""
    totals = {"sent": 0, "failed": 0}
    stopping = stop.event() if stop else asyncio.Event()
    forced = stop.event(2) if stop else asyncio.Event()
    if stopping.is_set():
        return totals
    rows = deque(due(conn, campaign, run_id, now))
    if not rows:
        return totals
    if window is None:
        window = max((getattr(s, "concurrency", DEFAULT_WINDOW) for s in senders.values()),
                     default=DEFAULT_WINDOW)
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    free = window
    freed, answered = asyncio.Event(), asyncio.Event()
    answers: list[tuple[tuple, SendResult]] = []
    tasks: set[asyncio.Task] = set()
    claiming = True

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
        answers.append((row, result))
        answered.set()

    async def settler(aconn: psycopg.AsyncConnection) -> None:
        nonlocal free
        while claiming or free < window:
            if not answers:
                answered.clear()
                await answered.wait()
                continue
            group = answers[:]
            answers.clear()
            await _settle(aconn, group)  # the answers that came during the last commit
            for _row, result in group:
                totals[result.status] += 1
            free += len(group)
            freed.set()

    claims, settles = await _connect(conn), await _connect(conn)
    waking = asyncio.create_task(stopping.wait())
    waking.add_done_callback(lambda _task: freed.set())  # a stop wakes the claiming loop
    try:
        settling = asyncio.create_task(settler(settles))
        settling.add_done_callback(lambda _task: freed.set())  # so does a failed settler
        while rows:
            if settling.done() or stopping.is_set():  # settle connection failed, or a stop
                break
            if not free:
                freed.clear()
                await freed.wait()
                continue
            group = [rows.popleft() for _ in range(min(free, len(rows)))]
            free -= len(group)
            ok = await claim_async(claims, [r[0] for r in group])
            for row in group:
                if row[0] in ok:
                    task = asyncio.create_task(one(row))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                else:  # settled by someone else meanwhile
                    free += 1
        claiming = False
        answered.set()
        if stopping.is_set():
            # wait for the answers in flight, bounded; a second signal gives up at once
            giving_up = asyncio.create_task(forced.wait())
            await asyncio.wait({settling, giving_up}, timeout=drain_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            giving_up.cancel()
            if not settling.done():  # the rest stay claimed and planned: in doubt
                totals["in_doubt"] = window - free
                settling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await settling
            else:
                settling.result()  # a failed settle connection is an error here too
        else:
            await settling
    finally:
        waking.cancel()
        for task in tasks:
            task.cancel()
        await claims.close()
        await settles.close()
    return totals
