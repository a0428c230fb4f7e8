"""raw.events' daily partitions carry their paced-housekeeping settings (sql/008): the ones
that exist when the migration runs, and every partition created later, by the collector, by
`crm ingest` or by anything else that calls raw.ensure_event_partitions."""

from __future__ import annotations

import datetime as dt

import psycopg

SETTINGS_SQL = """
SELECT c.reloptions, a.attstattarget
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'payload'
WHERE c.oid = to_regclass(%s)
"""
PACED = {"autovacuum_vacuum_cost_delay=20", "autovacuum_vacuum_cost_limit=200"}


def settings(db: psycopg.Connection, day: dt.date) -> tuple[set[str], int | None]:
    row = db.execute(SETTINGS_SQL, (f"raw.events_{day:%Y%m%d}",)).fetchone()
    assert row is not None, f"no partition for {day}"
    return set(row[0] or []), row[1]


def test_a_new_partition_gets_the_paced_settings(db: psycopg.Connection) -> None:
    # A day far from today, so no earlier test or the migration created it already.
    day = dt.date(2031, 3, 14)
    db.execute("DROP TABLE IF EXISTS raw.events_20310314")
    assert db.execute("SELECT raw.ensure_event_partitions(%s, %s)", (day, day)).fetchone()[0] == 1
    options, payload_statistics = settings(db, day)
    assert options >= PACED
    assert payload_statistics == 0
    db.execute("DROP TABLE raw.events_20310314")


def test_partitions_made_before_the_migration_have_them_too(db: psycopg.Connection) -> None:
    # 004 created today's partition and a week ahead; 008 ran after it.
    today = db.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()[0]
    options, payload_statistics = settings(db, today)
    assert options >= PACED
    assert payload_statistics == 0

