"""A `crm campaign run` stopped with SIGTERM (Dagster's run termination, a service manager) or
SIGINT (Ctrl-C) half-way, against the fake FCM and fake APNs with requests in flight: it
claims nothing more, waits for the answers in flight and commits them, exits with the signal's
status and `stopped by ...: N sent, M left planned`; started again it sends each remaining
push exactly once. Across both runs every delivery id reaches a fake exactly once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from push.fake_servers import FakePush
from tests.conftest import ROOT
from tests.push_shop import Shop, shop_fixture  # noqa: F401  (the `shop` fixture)

PEOPLE = 1200  # half Android (FCM), half iOS (APNs)


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[FakePush]:
    fake = FakePush(tmp_path / "fake-push")
    fake.start()
    yield fake
    fake.stop()


def _fill(shop: Shop, n: int) -> None:
    shop.execute("""INSERT INTO crm.users SELECT md5('s' || i)::uuid, 'UTC'
                    FROM generate_series(1, %s) AS i""", n)
    shop.execute("""INSERT INTO crm.push_tokens SELECT md5('s' || i)::uuid, 'tok-' || i,
                        CASE WHEN i %% 2 = 0 THEN 'android' ELSE 'ios' END, now(), true
                    FROM generate_series(1, %s) AS i""", n)


def _cli(shop: Shop, fakes: FakePush, *args: str) -> subprocess.Popen:
    env = {**os.environ, **fakes.env, "CRM_DATABASE_URL": shop.url}
    return subprocess.Popen([sys.executable, "-m", "crm", "campaign", "run", *args], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopped_run_sends_nothing_twice(shop: Shop, fakes: FakePush, tmp_path: Path,
                                         signum: signal.Signals) -> None:
    assert fakes.apns is not None
    _fill(shop, PEOPLE)
    campaign = tmp_path / "flash_sale.yaml"
    campaign.write_text("name: flash_sale\naudience: {}\nmessage: {title: Sale, body: Today}\n"
                        "send_time: now\nguardrails: {quiet_start: 0, quiet_end: 0}\n")
    args = (str(campaign), "--now", "2026-06-10T12:00:00+00:00")
    # answers take 0.2 s: FCM's 64 and APNs's 256 requests in flight at any moment
    fakes.fcm.delay = fakes.apns.delay = 0.2
    proc = _cli(shop, fakes, *args)
    deadline = time.monotonic() + 90
    while len(fakes.delivery_ids()) < PEOPLE // 4:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.005)
    proc.send_signal(signum)
    at_signal = len(fakes.delivery_ids())
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, (out, err)
    stopped = re.search(rf"stopped by {signum.name}: (\d+) sent, (\d+) left planned;", out)
    assert stopped, (out, err)
    sent, left = int(stopped[1]), int(stopped[2])
    print(f"at the signal {at_signal} received; the stopped run said: {out.strip()!r}")
    after_stop = Counter(fakes.delivery_ids())
    # the requests in flight at the signal were answered and committed, not abandoned
    assert sum(after_stop.values()) > at_signal
    ledger = Counter(shop.execute(
        "SELECT status, attempts FROM push.deliveries WHERE campaign = 'flash_sale'"))
    assert ledger == {("sent", 1): sent, ("planned", 0): left}, ledger  # none claimed, open
    assert sent == sum(after_stop.values()) and 0 < left < PEOPLE
    fakes.fcm.delay = fakes.apns.delay = 0.0
    out, err = _cli(shop, fakes, *args).communicate(timeout=120)
    assert out.strip().endswith(f"sent={left} skipped=0 failed=0"), (out, err)
    ids = {d for (d,) in shop.execute(
        "SELECT delivery_id::text FROM push.deliveries WHERE campaign = 'flash_sale' "
        "AND status = 'sent'")}
    received = Counter(fakes.delivery_ids())
    assert len(ids) == PEOPLE and set(received) == ids  # 0 lost
    assert set(received.values()) == {1}  # 0 sent twice
    assert {m["token"] for m in fakes.fcm.received} | {m["token"] for m in
                                                       fakes.apns.received} == {
        f"tok-{i}" for i in range(1, PEOPLE + 1)}


def test_stop_keeps_only_the_live_loops_events() -> None:
    """A long run starts one sending loop per campaign and batch; the events of finished
    loops are dropped, and a signal still wakes the loop that is running."""
    from push.stop import Stop

    stop = Stop()

    async def ask() -> None:
        stop.event()
        stop.event(2)

    for _ in range(200):
        asyncio.run(ask())

    async def wait_for_signal() -> bool:
        event = stop.event()
        asyncio.get_running_loop().call_later(0.05, stop.request, signal.SIGTERM)
        await asyncio.wait_for(event.wait(), timeout=5)
        return event.is_set()

    assert asyncio.run(wait_for_signal())
    assert len(stop._events) <= 2, f"{len(stop._events)} events kept for finished loops"
