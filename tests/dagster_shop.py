"""Fixtures of the Dagster tests: a small simulated shop in the test database, an MLflow
store and a Dagster instance (PostgreSQL storage) in temporary folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import httpx
import orjson
import psycopg
import pytest

from collector.ingest import ingest_items
from crm.settings import PROJECT_ROOT
from push.fake_servers import FakePush
from simulator import SimConfig, simulate
from tests.conftest import DBT_SCHEMAS, free_port


@pytest.fixture(scope="module")
def dagster_env(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """CRM_DATABASE_URL, MLflow and DAGSTER_HOME of this module's runs; yields DAGSTER_HOME."""
    from dagster_project.instance import ensure_instance

    base = tmp_path_factory.mktemp("dagster")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_DATABASE_URL", database_url)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{base / 'mlflow.db'}")
        mp.setenv("CRM_DAGSTER_HOME", str(base / "home"))
        mp.setenv("DAGSTER_HOME", str(base / "home"))
        home = ensure_instance(database_url)
        # The instance's storage is a database of the session's server, shared by every
        # module: what an earlier module's daemon left (schedule and sensor ticks, cursors,
        # runs) would decide this module's ticks.
        with dg.DagsterInstance.get() as instance:
            instance.wipe()
            instance.schedule_storage.wipe()
        yield home


@pytest.fixture(scope="module")
def fake_push(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakePush]:
    """The fake FCM and APNs, their settings in the environment (as `crm fake-push` prints
    them): the push resource and `crm ui`'s runs build the real senders from these."""
    fake = FakePush(tmp_path_factory.mktemp("fake-push"))
    env = fake.start()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        yield fake
    fake.stop()


def fill_shop(database_url: str, visitors: int = 300, days: int = 30, seed: int = 5) -> None:
    """Empty warehouse, then a simulated shop's events through the collector's validation."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE raw.events, raw.rejected_events")
        for schema in (*DBT_SCHEMAS, "ml"):
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    sim = simulate(SimConfig(visitors=visitors, days=days, seed=seed,
                             push_campaigns_per_week=7))
    ingest_items((orjson.loads(x) for x in sim.lines), database_url=database_url,
                 source="ingest:sim", progress=False)


@contextmanager
def crm_ui(seconds: float = 120) -> Iterator[tuple[str, subprocess.Popen]]:
    """`crm ui` on a free port, as a data engineer starts it; yields the webserver's URL once
    it answers, and the process. Stopped with SIGTERM on exit, as Ctrl-C or a service
    manager stops it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "crm", "ui", "--port", str(port)],
                            cwd=PROJECT_ROOT, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + seconds
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"crm ui did not answer within {seconds:g} s"
            time.sleep(0.5)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    """The data of a query to the webserver's GraphQL API (its errors fail the test)."""
    answer = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}},
                        timeout=30)
    answer.raise_for_status()
    body = answer.json()
    assert "errors" not in body, body["errors"]
    return body["data"]
