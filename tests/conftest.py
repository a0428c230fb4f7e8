"""Shared fixtures: a real PostgreSQL (the embedded server, in a temporary folder) with the
project's migrations applied, and real collector processes talking to it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from crm import keys
from crm.db.embedded import EmbeddedPostgres
from crm.db.migrate import migrate

# pytest takes hooks from a conftest by name: the summary of required / optional components
# (and, under pytest-xdist, the workers' checks brought to the process that prints it).
from tests.requirements import (  # noqa: F401
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_testnodedown,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    # Not under pytest's basetemp: pytest resets that folder to mode 0700 at every session
    # start, which would lock out the server's own system user when run as root.
    folder = Path(tempfile.mkdtemp(prefix="crm-test-pg-"))
    server = EmbeddedPostgres(folder / "pgdata")
    server.start()
    yield server
    with contextlib.suppress(Exception):
        server.stop(mode="immediate")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres: EmbeddedPostgres) -> str:
    url = postgres.start()
    migrate(url)
    return url


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def clean_raw(db: psycopg.Connection) -> psycopg.Connection:
    """Empty raw tables for tests that count rows."""
    db.execute("TRUNCATE raw.events, raw.rejected_events")
    return db


DBT_SCHEMAS = ("staging", "intermediate", "crm")


@pytest.fixture
def clean_warehouse(clean_raw: psycopg.Connection) -> psycopg.Connection:
    """Empty raw tables and none of dbt's schemas: a dbt scenario starts from nothing."""
    for schema in DBT_SCHEMAS:
        clean_raw.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return clean_raw


@pytest.fixture(scope="session", autouse=True)
def _dbt_paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """dbt's target/ and logs/ of the test run: not the developer's, whose partial-parse
    cache belongs to another database."""
    base = tmp_path_factory.mktemp("dbt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_DBT_TARGET_PATH", str(base / "target"))
        mp.setenv("CRM_DBT_LOG_PATH", str(base / "logs"))
        yield


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow store in a temporary folder, one per test module."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class CollectorProcess:
    database_url: str
    write_key: str
    port: int
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> CollectorProcess:
        env = {**os.environ, "CRM_DATABASE_URL": self.database_url}
        cmd = [sys.executable, "-m", "crm", "collector", "--port", str(self.port),
               *self.extra_args]
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError("collector did not become healthy")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def post(self, body: object, **kwargs) -> httpx.Response:
        headers = {"X-Write-Key": self.write_key, **kwargs.pop("headers", {})}
        return httpx.post(f"{self.url}/v1/events", json=body, headers=headers, timeout=30,
                          **kwargs)


@pytest.fixture
def collector_factory(database_url: str) -> Iterator:
    started: list[CollectorProcess] = []

    def make(allowed_origins: list[str] | None = None,
             extra_args: list[str] | None = None) -> CollectorProcess:
        key = keys.create(database_url, f"test-{uuid.uuid4().hex[:8]}", allowed_origins)
        c = CollectorProcess(database_url, key, free_port(), extra_args or [])
        started.append(c)
        return c.start()

    yield make
    for c in started:
        c.stop()


@pytest.fixture
def collector(collector_factory) -> CollectorProcess:
    return collector_factory()
