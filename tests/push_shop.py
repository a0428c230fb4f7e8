"""A small hand-made shop for the campaign tests: its own database on the test server with the
project's migrations, and just the CRM and model tables that planning reads (the columns it
uses), filled by direct inserts so each test states exactly the people it is about."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from crm.db.migrate import migrate
from push.campaign import Campaign
from tests.warehouse import person_id

TABLES = """
CREATE SCHEMA crm; CREATE SCHEMA ml;
CREATE TABLE crm.users (user_id uuid PRIMARY KEY, timezone text, email text, phone text);
CREATE TABLE crm.push_tokens (user_id uuid, push_token text, device_type text,
    last_used_at timestamptz, is_valid boolean);
CREATE TABLE crm.user_id_history (old_user_id uuid, new_user_id uuid);
CREATE TABLE crm.dim_products (product_id text, product_name text, price numeric,
    category text);
CREATE TABLE crm.user_features (user_id uuid, orders bigint, monetary numeric,
    timezone text);
CREATE TABLE crm.client_ids (user_id uuid, client_id text);
CREATE TABLE ml.user_segments (user_id text, segment text, assigned_by text);
CREATE TABLE ml.user_lifecycle (user_id text, p_active double precision);
CREATE TABLE ml.user_send_windows (user_id text, best_local_hour bigint, channel text,
    push_token text);
CREATE TABLE ml.user_recommendations (user_id text, rank bigint, product_id text);
"""


@dataclass
class Shop:
    url: str
    conn: psycopg.Connection

    def person(self, name: str, tz: str = "UTC", tokens: tuple[tuple[str, str], ...] = (),
               last_used: datetime | None = None, **features: Any) -> str:
        """A person with valid tokens ((token, device_type), newest first)."""
        pid = person_id(name)
        self.conn.execute("INSERT INTO crm.users VALUES (%s, %s)", (pid, tz))
        self.conn.execute(
            "INSERT INTO crm.user_features (user_id, orders, monetary) VALUES (%s, %s, %s)",
            (pid, features.get("orders", 0), features.get("monetary", 0)),
        )
        for i, (token, device) in enumerate(tokens):
            self.conn.execute(
                """INSERT INTO crm.push_tokens VALUES
                   (%s, %s, %s, coalesce(%s, now()) - make_interval(hours => %s), true)""",
                (pid, token, device, last_used, i),
            )
        return pid

    def execute(self, query: str, *params: Any) -> list[tuple]:
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture(name="shop")
def shop_fixture(database_url: str) -> Iterator[Shop]:
    name = f"push_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(database_url, dbname=name)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TABLES)
        yield Shop(url, conn)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def campaign(**fields: Any) -> Campaign:
    base: dict[str, Any] = {
        "name": "test_campaign",
        "audience": {},
        "message": {"title": "Hello", "body": "News from the shop"},
    }
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return Campaign.model_validate(base)
