"""`crm demo`: the whole path on the embedded database, as a new user first sees it.

Starts a collector, posts a simulated shop's traffic to it over HTTP (with the simulator's
realistic hazards: retries, junk ids, late and invalid events) and shows what landed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

from crm import keys
from crm.settings import PROJECT_ROOT

console = Console()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_collector(database_url: str, port: int, *options: str) -> Iterator[str]:
    """A collector subprocess for the duration of the block; yields its base URL."""
    env = {**os.environ, "CRM_DATABASE_URL": database_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crm", "collector", "--port", str(port), *options],
        env=env, cwd=PROJECT_ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the collector exited with code {proc.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the collector did not become healthy within 30 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def run_demo(database_url: str, visitors: int, days: int, seed: int) -> None:
    from simulator import SimConfig, simulate
    from simulator.output import post_lines

    key = keys.create(database_url, "demo", replace=True)
    sim = simulate(SimConfig(visitors=visitors, days=days, seed=seed))
    console.print(
        f"simulated {visitors:,} visitors over {days} days: {len(sim.lines):,} events "
        f"(seed {seed})"
    )
    before = _stored(database_url)
    with running_collector(database_url, _free_port()) as url:
        console.print(f"collector at {url}; posting the events over HTTP...")
        started = time.perf_counter()
        accepted, rejected = post_lines(sim.lines, url, key)
        elapsed = time.perf_counter() - started
    console.print(
        f"collector answered: {accepted:,} accepted, {rejected:,} rejected "
        f"in {elapsed:.1f} s ({len(sim.lines) / elapsed:,.0f} events/s)"
    )
    new = _stored(database_url) - before
    console.print(
        f"{new:,} new rows in raw.events; the other {accepted - new:,} accepted events were "
        "retries of events already stored (same event_id), kept once"
    )
    show_what_landed(database_url)

    from crm.transform import transform

    console.print("building the identity graph and the CRM tables with dbt (crm transform)...")
    started = time.perf_counter()
    transform(database_url=database_url, quiet=True)
    console.print(f"dbt build done in {time.perf_counter() - started:.1f} s")
    show_crm_tables(database_url)

    from crm.train import show_reports
    from ml.train import train

    console.print("training the models, gated in MLflow (crm train)...")
    started = time.perf_counter()
    reports = train(database_url, seed=seed)
    console.print(f"models trained in {time.perf_counter() - started:.1f} s")
    show_reports(reports)
    console.print("MLflow UI: .venv/bin/crm mlflow-ui")


def show_crm_tables(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        users = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE auth_status), "
            "count(*) FILTER (WHERE NOT auth_status) FROM crm.users"
        ).fetchone()
        devices = conn.execute("SELECT count(*), count(DISTINCT user_id) FROM crm.client_ids")
        devices = devices.fetchone()
        tokens = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE is_valid) FROM crm.push_tokens"
        ).fetchone()
        public = conn.execute("SELECT count(*) FROM crm.public_devices").fetchone()[0]
        multi = conn.execute(
            "SELECT count(*) FROM (SELECT user_id FROM crm.client_ids GROUP BY 1 "
            "HAVING count(*) > 1) m"
        ).fetchone()[0]
    console.print(
        f"crm.users: {users[0]:,} people ({users[1]:,} authorised, {users[2]:,} anonymous "
        f"visitors)\ncrm.client_ids: {devices[0]:,} devices of {devices[1]:,} people "
        f"({multi:,} people seen on more than one device)\n"
        f"crm.push_tokens: {tokens[0]:,} tokens, {tokens[1]:,} still valid\n"
        f"crm.public_devices: {public:,} shared public devices (kiosks) linking nobody"
    )


def _stored(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM raw.events").fetchone()[0]


def show_what_landed(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        by_type = conn.execute(
            "SELECT event_type, count(*), count(DISTINCT client_id), count(DISTINCT user_id) "
            "FROM raw.events WHERE source = 'http:demo' GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
        totals = conn.execute(
            "SELECT count(*), count(DISTINCT client_id), count(DISTINCT user_id), "
            "count(DISTINCT push_token), min(event_ts)::date, max(event_ts)::date "
            "FROM raw.events WHERE source = 'http:demo'"
        ).fetchone()
        reasons = conn.execute(
            "SELECT split_part(e, ':', 1) AS field, count(*) FROM raw.rejected_events, "
            "unnest(errors) AS e WHERE source = 'http:demo' GROUP BY 1 ORDER BY 2 DESC LIMIT 8"
        ).fetchall()
    table = Table("event_type", "events", "client_ids", "user_ids", title="raw.events (demo)")
    for event_type, n, clients, users in by_type:
        table.add_row(event_type, f"{n:,}", f"{clients:,}", f"{users:,}")
    console.print(table)
    n, clients, users, tokens, first, last = totals
    console.print(
        f"{n:,} events stored from {first} to {last}: {clients:,} ClientIDs, "
        f"{users:,} accounts, {tokens:,} push tokens"
    )
    if reasons:
        console.print(
            "raw.rejected_events by field: "
            + ", ".join(f"{field or '(event)'} {count:,}" for field, count in reasons)
        )
