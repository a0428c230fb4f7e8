"""`crm dbt ARGS...` runs the real dbt on the test database: no profile written, dbt's own output
and exit code."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from crm.dbt_command import dbt_arguments
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def crm_dbt(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "CRM_DATABASE_URL": database_url, **env}
    # An analyst's profile in ~/.dbt must not be what makes this work.
    environ.pop("DBT_PROFILES_DIR", None)
    environ.pop("DBT_PROJECT_DIR", None)
    return subprocess.run([sys.executable, "-m", "crm", "dbt", *args], env=environ, cwd=ROOT,
                          capture_output=True, text=True, timeout=180)


def _relation(database_url: str, name: str) -> str | None:
    with psycopg.connect(database_url) as conn:
        return conn.execute("select to_regclass(%s)::text", (name,)).fetchone()[0]


def test_run_and_test_one_model(database_url: str, clean_warehouse: psycopg.Connection) -> None:
    assert _relation(database_url, "staging.stg_events") is None
    seed = crm_dbt(database_url, "seed")  # stg_events reads the identifier blocklist seed
    assert seed.returncode == 0, seed.stdout + seed.stderr
    run = crm_dbt(database_url, "run", "-s", "stg_events")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Completed successfully" in run.stdout
    assert _relation(database_url, "staging.stg_events") == "staging.stg_events"

    test = crm_dbt(database_url, "test", "-s", "stg_events")
    assert test.returncode == 0, test.stdout + test.stderr
    assert "PASS" in test.stdout and "ERROR=0" in test.stdout


def test_selector_matching_nothing_fails_with_dbts_message(database_url: str) -> None:
    typo = crm_dbt(database_url, "run", "-s", "stg_evnets")
    assert typo.returncode != 0
    assert "does not match any enabled nodes" in typo.stdout + typo.stderr


def test_invalid_selector_method_fails_with_dbts_message(database_url: str) -> None:
    bad = crm_dbt(database_url, "run", "-s", "nosuchmethod:users")
    assert bad.returncode != 0
    assert "nosuchmethod" in bad.stdout + bad.stderr


def test_unknown_subcommand_is_dbts_usage_error(database_url: str) -> None:
    bad = crm_dbt(database_url, "rnu")
    assert bad.returncode == 2
    assert "No such command 'rnu'" in bad.stdout + bad.stderr


def test_bad_shop_timezone_is_named(database_url: str) -> None:
    bad = crm_dbt(database_url, "run", CRM_SHOP_TIMEZONE="Mars/Olympus")
    assert bad.returncode == 2
    assert "CRM_SHOP_TIMEZONE='Mars/Olympus'" in bad.stderr


def test_shop_timezone_var_only_where_dbt_takes_it() -> None:
    assert dbt_arguments(["run", "-s", "users+"], "Asia/Tokyo") == [
        "run", "-s", "users+", "--vars", '{"shop_timezone": "Asia/Tokyo"}']
    assert dbt_arguments(["docs", "generate"], "UTC")[-2:] == [
        "--vars", '{"shop_timezone": "UTC"}']
    # the analyst's own --vars wins; docs serve, debug, --version take none
    assert dbt_arguments(["run", "--vars", "{}"], "UTC") == ["run", "--vars", "{}"]
    assert dbt_arguments(["docs", "serve", "--port", "8081"], "UTC") == [
        "docs", "serve", "--port", "8081"]
    assert dbt_arguments(["--version"], "UTC") == ["--version"]
