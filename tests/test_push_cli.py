"""`crm campaign list` on a real PostgreSQL and dbt: a triggered campaign's audience is the
people its trigger names now (the abandoned checkouts), not an error."""

from __future__ import annotations

import psycopg
import pytest
from typer.testing import CliRunner

from crm.cli import app
from push.campaign import load_campaigns
from push.run import trigger_people
from tests.test_push_abandoned_cart import NOW, carts  # noqa: F401  (the `carts` fixture)


def test_campaign_list_counts_the_abandoned_checkouts(
        carts: psycopg.Connection, database_url: str,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "300")
    due = trigger_people(carts, load_campaigns()["abandoned_cart"], NOW, None)
    assert due  # the fixture left two carts an hour old or more
    result = CliRunner().invoke(app, ["campaign", "list"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "abandoned_cart.yaml" in line)
    cells = [c.strip() for c in row.split("│")]
    assert cells[5] == str(len(due)), row
