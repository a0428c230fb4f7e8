"""Campaign runs end to end: a trained simulated shop sent to the local fake FCM over real HTTP,
re-runs that send nothing, and a `crm campaign run` killed with SIGKILL half-way and started
again: every planned message reaches the fake server, none is lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest
import uvicorn
from starlette.requests import ClientDisconnect

from collector.ingest import ingest_items
from crm.transform import transform
from ml.train import train
from push.fake_fcm import FakeFcmState, create_app
from push.fake_servers import service_account
from push.fcm import FcmSender
from push.run import deliver_due, run_campaign
from simulator import SimConfig, simulate
from tests.conftest import DBT_SCHEMAS, ROOT, free_port
from tests.push_shop import Shop, shop_fixture  # noqa: F401  (the `shop` fixture)


class FakeFcm:
    """The fake FCM in a thread; `delay` slows every send (a congested service)."""

    def __init__(self) -> None:
        self.state = FakeFcmState()
        self.delay = 0.0
        app = create_app(self.state)

        async def slowed(scope, receive, send) -> None:
            if scope["type"] == "http" and scope["path"].endswith(":send") and self.delay:
                await asyncio.sleep(self.delay)
            # a sender killed mid-request: nothing was received
            with contextlib.suppress(ClientDisconnect):
                await app(scope, receive, send)

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(slowed, port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def credentials(self) -> dict:
        return service_account(f"{self.url}/token")

    def sender(self) -> FcmSender:
        return FcmSender(self.credentials(), self.url)


@pytest.fixture
def fake_fcm() -> Iterator[FakeFcm]:
    fake = FakeFcm()
    fake.thread.start()
    while not fake.server.started:
        time.sleep(0.02)
    yield fake
    fake.server.should_exit = True
    fake.thread.join(5)


@pytest.fixture(scope="module")
def trained_shop(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """300 simulated visitors for a month through ingest, dbt and crm train."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI",
                  f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("TRUNCATE raw.events, raw.rejected_events, push.deliveries, "
                         "push.token_invalidations, push.opt_outs")
            for schema in (*DBT_SCHEMAS, "ml"):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        sim = simulate(SimConfig(visitors=300, days=30, seed=5, push_campaigns_per_week=7))
        ingest_items((orjson.loads(x) for x in sim.lines), database_url=database_url,
                     source="ingest:sim", progress=False)
        transform(full_refresh=True, database_url=database_url)
        train(database_url, seed=7)
        yield database_url


def test_nightly_campaign_on_a_trained_shop(trained_shop: str, fake_fcm: FakeFcm) -> None:
    url = trained_shop
    now = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0)
    first = run_campaign(url, "nightly_recommendations", now=now,
                         senders={"fcm": fake_fcm.sender()})
    assert first.audience > 0 and first.recipients > 0
    with psycopg.connect(url) as conn:
        ledger = conn.execute(
            """SELECT d.delivery_id::text, d.person_id, d.status, d.reason, d.channel, d.title,
                      d.send_at, u.timezone
               FROM push.deliveries d LEFT JOIN crm.users u ON u.user_id::text = d.person_id
               WHERE d.campaign = 'nightly_recommendations'""").fetchall()
        tops = dict(conn.execute(
            """SELECT DISTINCT ON (r.user_id) r.user_id, p.product_name
               FROM ml.user_recommendations r JOIN crm.dim_products p USING (product_id)
               WHERE p.product_name IS NOT NULL ORDER BY r.user_id, r.rank""").fetchall())
    people = [row[1] for row in ledger]
    assert len(people) == len(set(people)) == first.audience  # one row per person
    statuses = Counter(row[2] for row in ledger)
    assert statuses["sent"] == first.sent and statuses["skipped"] == first.skipped
    assert first.sent + first.failed + first.waiting == first.to_send
    for _did, person, status, _reason, _channel, title, send_at, tz in ledger:
        if status != "skipped":
            assert title == f"Picked for you: {tops[person]}"
            local = send_at.astimezone(__import__("zoneinfo").ZoneInfo(tz))
            assert 8 <= local.hour < 22, (person, local)  # outside quiet hours there
    # a re-run of the same run plans and sends nothing
    again = run_campaign(url, "nightly_recommendations", now=now,
                         senders={"fcm": fake_fcm.sender()})
    assert (again.planned_new, again.line()) == (0, "sent=0 skipped=0 failed=0")
    # later that day every window has come: what waited goes out
    later = deliver_due(url, now + timedelta(hours=23, minutes=59),
                        senders={"fcm": fake_fcm.sender()})
    with psycopg.connect(url) as conn:
        final = dict(conn.execute(
            """SELECT delivery_id::text, status || coalesce(':' || reason, '')
               FROM push.deliveries WHERE campaign = 'nightly_recommendations'""").fetchall())
    received = Counter(m["data"]["delivery_id"] for m in fake_fcm.state.received)
    assert max(received.values()) == 1
    assert set(received) == {d for d, s in final.items() if s == "sent"}
    assert "planned" not in final.values()
    fcm_rows = [r for r in ledger if r[4] == "fcm" and r[2] != "skipped"]
    assert len(received) == len(fcm_rows) > 0
    assert later["nightly_recommendations"]["sent"] == len(received) - first.sent
    # iOS rows: no APNs sender was given, so they failed with the reason
    ios = {r[0] for r in ledger if r[4] == "apns" and r[2] != "skipped"}
    assert all(final[d] == "failed:no_sender:apns" for d in ios)


KILL_PEOPLE = 1200


def _fill(shop: Shop, n: int) -> None:
    shop.execute("""INSERT INTO crm.users SELECT md5('k' || i)::uuid, 'UTC'
                    FROM generate_series(1, %s) AS i""", n)
    shop.execute("""INSERT INTO crm.push_tokens SELECT md5('k' || i)::uuid, 'tok-' || i,
                        'android', now(), true FROM generate_series(1, %s) AS i""", n)


def _cli(shop: Shop, fake: FakeFcm, creds: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "CRM_DATABASE_URL": shop.url, "CRM_FCM_CREDENTIALS": str(creds),
           "CRM_FCM_URL": fake.url}
    return subprocess.Popen([sys.executable, "-m", "crm", "campaign", "run", *args], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_run_resumes_without_loss(shop: Shop, fake_fcm: FakeFcm, tmp_path: Path) -> None:
    _fill(shop, KILL_PEOPLE)
    creds = tmp_path / "fcm.json"
    creds.write_text(json.dumps(fake_fcm.credentials()))
    campaign = tmp_path / "flash_sale.yaml"
    campaign.write_text("name: flash_sale\naudience: {}\nmessage: {title: Sale, body: Today}\n"
                        "send_time: now\nguardrails: {quiet_start: 0, quiet_end: 0}\n")
    args = (str(campaign), "--now", "2026-06-10T12:00:00+00:00")
    fake_fcm.delay = 0.1  # ~64 in flight: 640 a second, so the kill lands mid-run
    proc = _cli(shop, fake_fcm, creds, *args)
    deadline = time.monotonic() + 60
    while len(fake_fcm.state.received) < KILL_PEOPLE // 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)  # requests the fake was still holding see the disconnect
    received_at_kill = Counter(m["data"]["delivery_id"] for m in fake_fcm.state.received)
    at_kill = Counter(shop.execute(
        "SELECT status, attempts > 0 FROM push.deliveries WHERE campaign = 'flash_sale'"))
    assert at_kill[("sent", True)] > 0 and at_kill[("planned", False)] > 0, at_kill
    # claimed, not settled: the requests in flight at the kill (and answers in their commit)
    in_flight = {d for (d,) in shop.execute(
        """SELECT delivery_id::text FROM push.deliveries
           WHERE campaign = 'flash_sale' AND status = 'planned' AND attempts > 0""")}
    assert len(in_flight) <= FcmSender(fake_fcm.credentials(), fake_fcm.url).concurrency
    fake_fcm.delay = 0.0
    out, err = _cli(shop, fake_fcm, creds, *args).communicate(timeout=120)
    assert out.strip().endswith("failed=0"), (out, err)
    ledger = dict(shop.execute(
        "SELECT delivery_id::text, status FROM push.deliveries WHERE campaign = 'flash_sale'"))
    assert len(ledger) == KILL_PEOPLE and set(ledger.values()) == {"sent"}
    received = Counter(m["data"]["delivery_id"] for m in fake_fcm.state.received)
    assert set(received) == set(ledger)  # 0 lost
    # a message sent twice has one collapse key, so the device shows it once
    for m in fake_fcm.state.received:
        did = m["data"]["delivery_id"]
        assert m["android"]["collapse_key"] == m["android"]["notification"]["tag"] == did
    duplicates = {d: n for d, n in received.items() if n > 1}
    # exactly the rows in flight whose request had reached the service went twice, once more
    # each: nothing settled was sent again, so repeats <= requests in flight at the kill
    assert set(duplicates) == in_flight & set(received_at_kill)
    assert set(duplicates.values()) <= {2} and len(duplicates) <= len(in_flight)
    print(f"kill at {sum(at_kill.values())} planned: {dict(at_kill)}; in flight at the kill: "
          f"{len(in_flight)}, repeats at the fake: {len(duplicates)}")
    # the run is idempotent from here on
    out, _ = _cli(shop, fake_fcm, creds, *args).communicate(timeout=120)
    assert out.strip().endswith("sent=0 skipped=0 failed=0")
