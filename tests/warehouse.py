"""A scenario's view of the warehouse: feed events through the collector's ingest path, run
the dbt build, read the results. Used by the identity and sessions suites."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from collector.ingest import ingest_items
from crm.transform import transform


def ev(event: str, ts: str, **fields: Any) -> dict[str, Any]:
    """An event; `ts` is 'DD HH:MM' or 'DD HH:MM:SS' in September 2026 (UTC). Without an
    event_id, the collector derives one from the content."""
    day, hms = ts.split()
    if hms.count(":") == 1:
        hms += ":00"
    body = {"event": event, "timestamp": f"2026-09-{int(day):02d}T{hms}Z", **fields}
    if event == "page_view":
        body.setdefault("page_url", "https://shop.example/")
    if event == "user_login":
        body.setdefault("auth_status", 1)
    body.setdefault("device_type", "web")
    return body


def person_id(anchor: str) -> str:
    """The person id the identity models derive: md5 of the anchor, as a UUID."""
    return str(uuid.UUID(hashlib.md5(anchor.encode()).hexdigest()))


def insert_raw_event(conn: psycopg.Connection, event_type: str, account: str,
                     at: datetime, device_type: str = "web", push_token: str | None = None,
                     **payload: Any) -> None:
    """One account's event written straight into raw.events (received when it happened), on
    the device `cid-<account>`: for triggers that read raw.events, not the marts."""
    conn.execute("SELECT raw.ensure_event_partitions(%s, %s)", (at.date(), at.date()))
    conn.execute(
        "INSERT INTO raw.events (event_id, event_type, event_ts, received_at, client_id,"
        " user_id, device_type, push_token, source, payload, received_day) VALUES (%s, %s,"
        " %s, %s, %s, %s, %s, %s, 'test', %s, %s)",
        (uuid.uuid4(), event_type, at, at, f"cid-{account}", account, device_type, push_token,
         Jsonb({"event": event_type, **payload}), at.date()))


class Warehouse:
    """A clean database for one scenario, with helpers to feed events and read the marts."""

    def __init__(self, url: str) -> None:
        self.url = url

    def ingest(self, events: list[dict[str, Any]]) -> None:
        summary = ingest_items(events, database_url=self.url, source="ingest:test",
                               progress=False)
        assert summary.rejected == 0, [r.errors for r in summary.examples]

    def transform(self, full_refresh: bool = False) -> None:
        transform(full_refresh=full_refresh, database_url=self.url)

    def rows(self, sql: str, *params: Any) -> list[tuple]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql, params).fetchall()
