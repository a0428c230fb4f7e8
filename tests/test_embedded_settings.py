"""The embedded server runs with the project's settings, and a data folder made by an older
version (without one of them) gets it on its next start without a restart."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import psycopg

from crm.db.embedded import SERVER_SETTINGS, EmbeddedPostgres


def show(url: str, name: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT current_setting(%s)", [name]).fetchone()[0]


def postmaster_start(url: str) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]


def test_the_embedded_server_runs_with_the_project_settings(database_url: str) -> None:
    # Named, not only looped over: a setting dropped from SERVER_SETTINGS must fail here.
    # Zero-filled WAL segments stalled every commit for 60-220 ms after a bulk load.
    assert show(database_url, "wal_init_zero") == "off"
    assert show(database_url, "max_wal_size") == "4GB"
    assert show(database_url, "backend_flush_after") == "256kB"
    for name, value in SERVER_SETTINGS.items():
        assert show(database_url, name).lower() == value.lower(), name


def test_a_folder_without_a_new_setting_gets_it_on_the_next_start() -> None:
    folder = Path(tempfile.mkdtemp(prefix="crm-test-pg-settings-"))
    server = EmbeddedPostgres(folder / "pgdata")
    try:
        url = server.start()
        with psycopg.connect(url, autocommit=True) as conn:
            # What a folder created before the setting existed looks like.
            conn.execute("ALTER SYSTEM RESET wal_init_zero")
            conn.execute("SELECT pg_reload_conf()")
        assert show(url, "wal_init_zero") == "on"
        started = postmaster_start(url)
        assert server.start() == url
        assert show(url, "wal_init_zero") == "off"
        assert postmaster_start(url) == started, "the running server was restarted"
    finally:
        with contextlib.suppress(Exception):
            server.stop(mode="immediate")
        shutil.rmtree(folder, ignore_errors=True)
