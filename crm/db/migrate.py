"""Applies `sql/NNN_*.sql` in order, once each, recorded in `ops.schema_migrations`.

A very small runner on purpose: plain SQL files that analysts can read, one transaction per
file, an advisory lock so two processes starting together do not race, and a checksum so an
edited, already-applied file is reported instead of silently ignored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg

from crm.settings import SQL_DIR

LOCK_KEY = 7_301_946_001  # arbitrary constant shared by every migrating process


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


class MigrationError(RuntimeError):
    pass


def discover(sql_dir: Path = SQL_DIR) -> list[Migration]:
    return [Migration(p.stem, p) for p in sorted(sql_dir.glob("[0-9][0-9][0-9]_*.sql"))]


def migrate(database_url: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply pending migrations; returns the versions applied now."""
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS ops")
            conn.execute(
                """CREATE TABLE IF NOT EXISTS ops.schema_migrations (
                       version text PRIMARY KEY,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = dict(conn.execute("SELECT version, checksum FROM ops.schema_migrations"))
            for m in discover(sql_dir):
                if m.version in done:
                    if done[m.version] != m.checksum:
                        raise MigrationError(
                            f"{m.path.name} changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(m.sql)
                    conn.execute(
                        "INSERT INTO ops.schema_migrations (version, checksum) VALUES (%s, %s)",
                        (m.version, m.checksum),
                    )
                applied_now.append(m.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied_now
