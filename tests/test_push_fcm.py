"""FCM sender against the local fake FCM over real HTTP: OAuth, dead tokens, retries."""

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from push.fake_fcm import FakeFcmState, create_app
from push.fake_servers import service_account
from push.fcm import FcmSender


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fake_fcm() -> Iterator[tuple[FakeFcmState, str]]:
    state = FakeFcmState()
    port = _port()
    server = uvicorn.Server(uvicorn.Config(create_app(state), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield state, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


def _credentials(base: str) -> dict:
    return service_account(f"{base}/token")


def test_sends_dead_tokens_and_retries(fake_fcm: tuple[FakeFcmState, str]) -> None:
    state, base = fake_fcm
    state.failures.update(
        {"dead": "unregistered", "junk": "bad_token", "slow": "429:1", "flaky": "500"}
    )

    async def run() -> dict:
        sender = FcmSender(_credentials(base), base, retry_cap=5)
        try:
            tokens = ["ok", "dead", "junk", "slow", "flaky"]
            results = await asyncio.gather(
                *(sender.send(t, "hi", "there", {"delivery_id": f"d-{t}"}) for t in tokens)
            )
            return dict(zip(tokens, results, strict=True))
        finally:
            await sender.aclose()

    started = time.monotonic()
    results = asyncio.run(run())
    elapsed = time.monotonic() - started
    assert results["ok"].status == "sent"
    assert (results["dead"].reason, results["dead"].dead_token) == ("unregistered", True)
    assert (results["junk"].reason, results["junk"].dead_token) == ("bad_token", True)
    assert results["slow"].status == "sent" and state.attempts["slow"] == 2
    assert results["flaky"].status == "sent" and state.attempts["flaky"] == 2
    assert elapsed >= 1.0  # the 429's Retry-After: 1 was honoured
    assert state.attempts["dead"] == 1  # dead tokens are not retried
    sent = {m["token"]: m["data"]["delivery_id"] for m in state.received}
    assert sent == {"ok": "d-ok", "slow": "d-slow", "flaky": "d-flaky"}


def test_delivery_from_ledger_records_dead_tokens(fake_fcm: tuple[FakeFcmState, str], db) -> None:
    from datetime import UTC, datetime, timedelta
    from uuid import uuid4

    from push.deliver import deliver
    from push.ledger import PlannedPush, counts, plan

    state, base = fake_fcm
    now = datetime.now(UTC)
    run = str(uuid4())
    dead = f"dead-{run}"
    state.failures[dead] = "unregistered"
    rows = [
        PlannedPush(f"u{i}", "fcm", f"tok{i}-{run}", now, now + timedelta(hours=1), "t", "b")
        for i in range(20)
    ]
    rows.append(PlannedPush("u-dead", "fcm", dead, now, now + timedelta(hours=1), "t", "b"))
    plan(db, "fcm_ledger", run, rows)

    async def run_once() -> dict:
        sender = FcmSender(_credentials(base), base)
        try:
            return await deliver(db, "fcm_ledger", run, now, {"fcm": sender}, window=7)
        finally:
            await sender.aclose()

    assert asyncio.run(run_once()) == {"sent": 20, "failed": 1}
    assert asyncio.run(run_once()) == {"sent": 0, "failed": 0}  # a re-run sends nothing
    assert counts(db, "fcm_ledger", run) == {"sent": 20, "failed": 1}
    assert len(state.received) == 20
    ids = {m["data"]["delivery_id"] for m in state.received}
    assert len(ids) == 20
    reason = db.execute(
        "SELECT reason FROM push.token_invalidations WHERE push_token = %s", (dead,)
    ).fetchone()
    assert reason == ("unregistered",)
