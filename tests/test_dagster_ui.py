"""`crm ui` as a data engineer starts it: the webserver and the daemon on the project's
PostgreSQL instance serve the asset graph and its checks over GraphQL; a campaign run it
launches is terminated half-way from Dagster (GraphQL's terminateRun, as the run's page does)
with requests in flight to the fake FCM and APNs, ends canceled with those answers settled,
and run again sends the rest, every delivery id reaching a fake exactly once; SIGTERM
stops every process it started. One `crm ui` serves the module (starting it is the cost)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlparse

import psutil
import psycopg
import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from push.fake_servers import FakePush
from tests.conftest import DBT_SCHEMAS
from tests.dagster_shop import crm_ui, dagster_env, fake_push, graphql  # noqa: F401
from tests.push_shop import TABLES

pytestmark = [
    pytest.mark.slow,
    # dagster_graphql's client calls gql the older way (its own code, not ours)
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]

PEOPLE = 1200  # half Android (FCM), half iOS (APNs)
CAMPAIGN = "flash_sale"
NOW = "2026-06-10T12:00:00+00:00"
NODES = "{ assetNodes { assetKey { path } hasAssetChecks } }"
ENDED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@pytest.fixture(scope="module")
def shop(database_url: str, dagster_env: Path,  # noqa: F811
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """1,200 people with one valid token each, the tables a campaign reads, and a campaign
    for everyone sent now, in a folder of the shop's own (CRM_CAMPAIGNS_DIR)."""
    folder = tmp_path_factory.mktemp("campaigns")
    (folder / f"{CAMPAIGN}.yaml").write_text(
        f"name: {CAMPAIGN}\naudience: {{}}\nmessage: {{title: Sale, body: Today}}\n"
        "send_time: now\nguardrails: {quiet_start: 0, quiet_end: 0}\n")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE raw.events, push.deliveries, push.token_invalidations, "
                     "push.opt_outs")
        for schema in (*DBT_SCHEMAS, "ml"):
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(TABLES)
        conn.execute("""INSERT INTO crm.users SELECT md5('s' || i)::uuid, 'UTC'
                        FROM generate_series(1, %s) AS i""", (PEOPLE,))
        conn.execute("""INSERT INTO crm.push_tokens SELECT md5('s' || i)::uuid, 'tok-' || i,
                            CASE WHEN i %% 2 = 0 THEN 'android' ELSE 'ios' END, now(), true
                        FROM generate_series(1, %s) AS i""", (PEOPLE,))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_CAMPAIGNS_DIR", str(folder))
        yield database_url
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE push.deliveries")
        for schema in ("crm", "ml"):
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _launch(client: DagsterGraphQLClient) -> str:
    return client.submit_job_execution(
        "__ASSET_JOB", asset_selection=[["campaigns", CAMPAIGN]],
        run_config={"ops": {f"campaigns__{CAMPAIGN}": {"config": {"now": NOW}}}})


def _wait_end(client: DagsterGraphQLClient, run_id: str, seconds: float) -> DagsterRunStatus:
    deadline = time.monotonic() + seconds
    while (status := client.get_run_status(run_id)) not in ENDED:
        assert time.monotonic() < deadline, f"run {run_id} still {status} after {seconds:g} s"
        time.sleep(0.5)
    return status


def _ledger(url: str) -> Counter[tuple[str, int]]:
    with psycopg.connect(url) as conn:
        return Counter(conn.execute(
            "SELECT status, attempts FROM push.deliveries WHERE campaign = %s",
            (CAMPAIGN,)).fetchall())


class Ui:
    """The module's `crm ui`: its URL, process and GraphQL client; stop() as at Ctrl-C."""

    def __init__(self, url: str, proc: subprocess.Popen, stack: ExitStack) -> None:
        self.url, self.proc, self._stack = url, proc, stack
        address = urlparse(url)
        self.client = DagsterGraphQLClient(address.hostname or "127.0.0.1",
                                           port_number=address.port)

    def stop(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def ui(shop: str, fake_push: FakePush) -> Iterator[Ui]:  # noqa: F811
    with ExitStack() as stack:
        url, proc = stack.enter_context(crm_ui())
        yield Ui(url, proc, stack)


def test_crm_ui_serves_the_graph_and_its_checks(ui: Ui) -> None:
    nodes = graphql(ui.url, NODES)["assetNodes"]
    keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
    assert {"crm/users", "crm/client_ids", "crm/push_tokens", "ml/user_segments",
            "ml/user_recommendations", "ingestion/raw_events_health",
            f"campaigns/{CAMPAIGN}"} <= keys
    with_checks = {"/".join(n["assetKey"]["path"]) for n in nodes if n["hasAssetChecks"]}
    assert {"crm/users", "ml/user_segments", "ml/user_recommendations"} <= with_checks


def test_terminating_a_campaign_run_in_dagster_sends_nothing_twice(
        ui: Ui, shop: str, fake_push: FakePush) -> None:  # noqa: F811
    assert fake_push.apns is not None
    # answers take 0.2 s: requests are in flight at any moment of the run
    fake_push.fcm.delay = fake_push.apns.delay = 0.2
    client = ui.client
    run_id = _launch(client)
    deadline = time.monotonic() + 180
    while len(fake_push.delivery_ids()) < PEOPLE // 4:
        status = client.get_run_status(run_id)
        assert status not in ENDED, f"the run ended ({status}) before it was terminated"
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.05)
    client.terminate_run(run_id)
    at_signal = len(fake_push.delivery_ids())
    assert _wait_end(client, run_id, 90) == DagsterRunStatus.CANCELED
    after_stop = Counter(fake_push.delivery_ids())
    ledger = _ledger(shop)
    sent, left = ledger[("sent", 1)], ledger[("planned", 0)]
    print(f"at termination {at_signal} received; settled: {ledger}")
    # The answers in flight were waited for and committed; nothing was left claimed.
    assert sum(after_stop.values()) >= at_signal
    assert ledger == {("sent", 1): sent, ("planned", 0): left}, ledger
    assert sent == sum(after_stop.values()) and 0 < left < PEOPLE

    # Resumed from the terminal (a second Dagster run would cost another run process):
    # the ledger, not the way in, decides what is left.
    fake_push.fcm.delay = fake_push.apns.delay = 0.0
    resumed = subprocess.run([sys.executable, "-m", "crm", "campaign", "run", CAMPAIGN,
                              "--now", NOW], capture_output=True, text=True, timeout=120)
    assert resumed.stdout.strip().endswith(f"sent={left} skipped=0 failed=0"), resumed
    assert _ledger(shop) == {("sent", 1): PEOPLE}
    with psycopg.connect(shop) as conn:
        ids = {d for (d,) in conn.execute(
            "SELECT delivery_id::text FROM push.deliveries WHERE campaign = %s", (CAMPAIGN,))}
    received = Counter(fake_push.delivery_ids())
    assert len(ids) == PEOPLE and set(received) == ids  # 0 lost
    assert set(received.values()) == {1}  # 0 sent twice


def test_crm_ui_stops_with_its_children(ui: Ui) -> None:
    """Last in the module: SIGTERM to `crm ui` (Ctrl-C, a service manager) ends it and every
    process it started."""
    children = psutil.Process(ui.proc.pid).children(recursive=True)
    assert len(children) >= 3  # dagster dev, the webserver, the daemon (and code servers)
    ui.stop()
    assert ui.proc.returncode == 0
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"processes of crm ui outlived it: {[p.cmdline() for p in alive]}"
