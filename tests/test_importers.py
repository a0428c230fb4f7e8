"""Imports of the real shared data sets land the counts computed independently from the files."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import psycopg
import pytest
from typer.testing import CliRunner

from crm.importers import load
from crm.importers.cdnow import cdnow_events
from crm.importers.cli import import_app
from crm.importers.online_retail import online_retail_events
from tests.requirements import require

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ONLINE_RETAIL = DATA / "online_retail_sample.csv"
CDNOW = DATA / "cdnow_master.txt"


@pytest.fixture(autouse=True)
def _shared_data() -> None:
    # skips on a developer's machine without the data sets; fails under CRM_REQUIRE_ALL
    require("../shared/data", DATA.is_dir(), f"the shared data sets are not at {DATA}")


def _stored(database_url: str, source: str) -> tuple[int, int, int, float]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT count(*), count(DISTINCT user_id), count(*) FILTER (WHERE user_id IS NULL), "
            "coalesce(sum((payload->>'total_price')::numeric), 0)::float8 "
            "FROM raw.events WHERE source = %s",
            (source,),
        ).fetchone()


def test_online_retail_import_lands_one_order_per_kept_invoice(database_url: str) -> None:
    # Expected from the file itself: invoices that are not cancellations and keep a line with
    # a positive quantity; guests are those with CustomerID NA.
    raw = pl.read_csv(ONLINE_RETAIL, null_values=["NA"],
                      schema_overrides={"InvoiceNo": pl.String, "CustomerID": pl.String})
    kept = raw.filter(~pl.col("InvoiceNo").str.starts_with("C") & (pl.col("Quantity") > 0))
    invoices = kept.group_by("InvoiceNo").agg(
        pl.col("CustomerID").first(), total=(pl.col("Quantity") * pl.col("UnitPrice")).sum()
    )
    n_guest = invoices.filter(pl.col("CustomerID").is_null()).height
    n_customers = invoices["CustomerID"].drop_nulls().n_unique()

    plan = online_retail_events(ONLINE_RETAIL)
    assert plan.rows_read == raw.height == 2709
    assert plan.skipped["cancellation_lines"] == raw.filter(
        pl.col("InvoiceNo").str.starts_with("C")).height
    result = load(plan, database_url, progress=False)
    assert (result.accepted, result.rejected) == (invoices.height, 0)

    count, users, guests, total = _stored(database_url, plan.source)
    assert (count, users, guests) == (invoices.height, n_customers, n_guest)
    assert total == pytest.approx(invoices["total"].sum(), abs=0.05)
    with psycopg.connect(database_url) as conn:
        guest_clients = conn.execute(
            "SELECT count(DISTINCT client_id) FROM raw.events WHERE source = %s "
            "AND user_id IS NULL AND client_id LIKE 'online-retail-guest-%%'", (plan.source,)
        ).fetchone()[0]
        # Invoice times are London local time: 2011-06-12 12:34 BST is 11:34 UTC.
        ts = conn.execute(
            "SELECT event_ts AT TIME ZONE 'UTC' FROM raw.events WHERE source = %s "
            "AND payload->>'order_id' = '556478'", (plan.source,)
        ).fetchone()[0]
    assert guest_clients == n_guest
    assert ts.isoformat() == "2011-06-12T11:34:00"

    # A second import (through the CLI this time) stores nothing new.
    run = CliRunner().invoke(import_app, ["online-retail", str(ONLINE_RETAIL),
                                          "--database-url", database_url])
    assert run.exit_code == 0, run.output
    assert _stored(database_url, plan.source)[0] == invoices.height


def test_cdnow_import_lands_every_purchase(database_url: str) -> None:
    rows = [line.split() for line in CDNOW.read_text().splitlines()[1:] if line.strip()]
    customers = {r[0] for r in rows}
    dollars = sum(float(r[3]) for r in rows)
    assert (len(rows), len(customers)) == (69_659, 23_570)  # as the data README says

    plan = cdnow_events(CDNOW)
    result = load(plan, database_url, progress=False)
    assert (result.accepted, result.rejected) == (len(rows), 0)
    count, users, anonymous, total = _stored(database_url, plan.source)
    assert (count, users, anonymous) == (len(rows), len(customers), 0)
    assert total == pytest.approx(dollars, abs=0.5)
    with psycopg.connect(database_url) as conn:
        first = conn.execute(
            "SELECT min(event_ts)::date, max(event_ts)::date, count(DISTINCT event_type) "
            "FROM raw.events WHERE source = %s", (plan.source,)).fetchone()
    assert [str(first[0]), str(first[1]), first[2]] == ["1997-01-01", "1998-06-30", 1]
