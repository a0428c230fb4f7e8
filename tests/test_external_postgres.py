"""CRM_DATABASE_URL: every command works on another PostgreSQL (14+), here Debian's 15.

Skipped where Debian's server binaries are not installed (failed instead under
CRM_REQUIRE_ALL, as in CI); the embedded server (PostgreSQL 18) covers everything else in the
suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from tests.conftest import free_port
from tests.events import batch
from tests.requirements import require

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ROOT = Path(__file__).resolve().parents[1]


def _as_postgres_user() -> dict:
    # initdb refuses to run as root; Debian's package has a `postgres` system user.
    return {"user": "postgres"} if os.geteuid() == 0 else {}


@pytest.fixture(scope="module")
def pg15_url() -> Iterator[str]:
    require("postgresql-15", (PG_BIN / "postgres").exists(),
            f"Debian's PostgreSQL 15 server is not in {PG_BIN} (apt-get install postgresql-15)")
    folder = Path(tempfile.mkdtemp(prefix="crm-test-pg15-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    kw = _as_postgres_user()
    subprocess.run([PG_BIN / "initdb", "-D", data, "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True, **kw)
    port = free_port()
    subprocess.run(
        [PG_BIN / "pg_ctl", "-D", data, "-w", "-l", folder / "log", "-o",
         f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "stop"],
                       capture_output=True, **kw)
        shutil.rmtree(folder, ignore_errors=True)


def crm(*args: str, url: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    # A target folder of its own: dbt's partial-parse cache is per database here.
    target = Path(tempfile.gettempdir()) / "crm-test-pg15-dbt-target"
    env = {**os.environ, "CRM_DATABASE_URL": url, "CRM_DBT_TARGET_PATH": str(target)}
    return subprocess.run([sys.executable, "-m", "crm", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, timeout=600)


def test_commands_use_the_configured_server(pg15_url):
    url_out = crm("db", "url", url=pg15_url)
    assert url_out.stdout.decode().strip().splitlines()[-1] == pg15_url
    assert crm("db", "migrate", url=pg15_url).returncode == 0
    key = crm("keys", "create", "pg15", url=pg15_url).stdout.decode().strip().splitlines()[-1]
    assert key.startswith("wk_")
    events = batch(25, user_id="acct-15", email="Someone@Example.com")
    data = b"\n".join(orjson.dumps(e) for e in events)
    out = crm("ingest", "-", "-q", url=pg15_url, stdin=data)
    assert out.returncode == 0, out.stderr.decode()
    built = crm("transform", url=pg15_url)
    assert built.returncode == 0, built.stdout.decode()[-3000:] + built.stderr.decode()[-3000:]
    with psycopg.connect(pg15_url) as conn:
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("15")
        assert conn.execute("SELECT count(*) FROM raw.events").fetchone()[0] == 25
        user = conn.execute(
            "SELECT external_user_id, email, auth_status FROM crm.users"
        ).fetchall()
    assert user == [("acct-15", "someone@example.com", True)]
