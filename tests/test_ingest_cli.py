"""`crm ingest`, `crm keys` and `crm db` as a user runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import psycopg

from tests.events import batch, page_view

ROOT = Path(__file__).resolve().parents[1]


def crm(*args: str, env: dict[str, str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crm", *args], cwd=ROOT, env={**os.environ, **env},
        input=stdin, capture_output=True, timeout=300,
    )


def test_ingest_file_validates_stores_and_is_idempotent(tmp_path, database_url, clean_raw):
    good = batch(7)
    bad = page_view(event="teleport")
    lines = [orjson.dumps(e) for e in good[:3]] + [b"{not json", orjson.dumps(bad), b""]
    lines += [orjson.dumps(e) for e in good[3:]]
    path = tmp_path / "backfill.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    env = {"CRM_DATABASE_URL": database_url}
    for _ in range(2):  # loading the same file twice stores its events once
        out = crm("ingest", str(path), "--quiet", env=env)
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.decode().strip().splitlines()[-1] == "accepted 7, rejected 2"
    db = clean_raw
    assert db.execute("SELECT count(*) FROM raw.events").fetchone()[0] == 7
    rejected = db.execute(
        "SELECT batch_index, errors, raw_text FROM raw.rejected_events "
        "WHERE source = 'ingest:backfill.jsonl' ORDER BY rejected_id LIMIT 2"
    ).fetchall()
    assert rejected[0][0] == 3 and "line 4" in rejected[0][1][0]
    assert rejected[0][2] == "{not json"  # the broken line, verbatim
    assert rejected[1][0] == 4 and "teleport" in " ".join(rejected[1][1])


def test_ingest_from_stdin(database_url, clean_raw):
    events = batch(4)
    data = b"\n".join(orjson.dumps(e) for e in events)
    out = crm("ingest", "-", "-q", env={"CRM_DATABASE_URL": database_url}, stdin=data)
    assert out.returncode == 0, out.stderr.decode()
    assert clean_raw.execute(
        "SELECT count(*) FROM raw.events WHERE source = 'ingest:stdin'").fetchone()[0] == 4


def test_ingest_missing_file_is_a_clear_error(database_url):
    out = crm("ingest", "/nonexistent/events.jsonl", env={"CRM_DATABASE_URL": database_url})
    assert out.returncode == 2 and "no such file" in out.stderr.decode()


def test_keys_create_list_revoke(database_url):
    env = {"CRM_DATABASE_URL": database_url}
    out = crm("keys", "create", "shop-web", "--origin", "https://shop.example/", env=env)
    assert out.returncode == 0, out.stderr.decode()
    key = out.stdout.decode().strip().splitlines()[-1]
    assert key.startswith("wk_") and len(key) > 30
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT key_hash, allowed_origins FROM ops.write_keys WHERE name = 'shop-web'"
        ).fetchone()
    assert key not in stored[0] and stored[1] == ["https://shop.example"]
    assert crm("keys", "create", "shop-web", env=env).returncode == 1  # names are unique
    listing = crm("keys", "list", env=env).stdout.decode()
    assert "shop-web" in listing and key not in listing
    assert crm("keys", "revoke", "shop-web", env=env).returncode == 0
    assert crm("keys", "revoke", "shop-web", env=env).returncode == 1


def test_embedded_database_up_url_migrate_down():
    state = Path(tempfile.mkdtemp(prefix="crm-test-state-"))  # see the `postgres` fixture
    env = {"CRM_STATE_DIR": str(state), "CRM_DATABASE_URL": ""}
    up = crm("db", "up", env=env)
    assert up.returncode == 0, up.stderr.decode()
    url = crm("db", "url", env=env).stdout.decode().strip().splitlines()[-1]
    assert url.startswith("postgresql://") and str(state) in url
    with psycopg.connect(url) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM ops.schema_migrations")]
    assert versions == sorted(versions) and versions[0].startswith("001")
    again = crm("db", "migrate", env=env)
    assert "up to date" in again.stderr.decode()
    assert crm("db", "up", env=env).stdout.decode().strip() == url  # reuses the running server
    assert "stopped" in crm("db", "down", env=env).stderr.decode()
    assert "not running" in crm("db", "down", env=env).stderr.decode()
    shutil.rmtree(state, ignore_errors=True)
