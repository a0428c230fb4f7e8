"""Running the dbt project (dbt/) against the CRM database, from Python and as `crm transform`.

dbt reads its connection from environment variables (dbt/profiles.yml); this module fills
them from the same database URL every other command uses (`crm.settings.database_url()`:
CRM_DATABASE_URL or the embedded server), so there is exactly one place that says which
database the pipeline works on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from psycopg.conninfo import conninfo_to_dict

from crm.settings import PROJECT_ROOT

DBT_DIR = PROJECT_ROOT / "dbt"
# Statuses of a dbt node result that mean the build did not do its job.
FAILED_STATUSES = {"error", "fail", "runtime error", "skipped"}


class TransformError(RuntimeError):
    """`dbt build` failed; the message names the failed nodes."""

    def __init__(self, message: str, failed_nodes: list[str] | None = None) -> None:
        super().__init__(message)
        self.failed_nodes = failed_nodes or []


def dbt_env(database_url: str) -> dict[str, str]:
    """The env vars profiles.yml reads, from a libpq URL or key=value string.

    `postgresql://postgres:@/postgres?host=/path/to/socketdir` works: host may be a unix
    socket directory (psycopg2, which dbt-postgres uses, treats a path as one).
    """
    info = conninfo_to_dict(database_url)
    env = {
        "CRM_DBT_HOST": str(info.get("host") or "localhost"),
        "CRM_DBT_PORT": str(info.get("port") or "5432"),
        "CRM_DBT_USER": str(info.get("user") or os.environ.get("PGUSER") or "postgres"),
        "DBT_ENV_SECRET_CRM_DBT_PASSWORD": str(info.get("password") or ""),
        "CRM_DBT_DBNAME": str(info.get("dbname") or "postgres"),
        "CRM_DBT_SSLMODE": str(info.get("sslmode") or "prefer"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    return env


@contextmanager
def dbt_connection(database_url: str) -> Iterator[None]:
    """dbt reads its connection from os.environ: set it for one invocation, then restore.
    In-process dbt (`run_dbt`) and Dagster's dbt subprocess both go through this."""
    values = dbt_env(database_url)
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_dbt(args: list[str], database_url: str | None = None) -> Any:
    """Invoke dbt in-process (`dbtRunner`) on the project in dbt/; returns its dbtRunnerResult.

    `CRM_DBT_TARGET_PATH` / `CRM_DBT_LOG_PATH` move dbt's target/ and logs/ folders (tests use
    that so parallel runs on different databases do not share a partial-parse cache).
    """
    from dbt.cli.main import dbtRunner

    if database_url is None:
        from crm.settings import database_url as configured

        database_url = configured()
    cli = [*args, "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)]
    target_path = os.environ.get("CRM_DBT_TARGET_PATH")
    log_path = os.environ.get("CRM_DBT_LOG_PATH")
    if target_path:
        cli += ["--target-path", str(Path(target_path))]
    if log_path:
        cli += ["--log-path", str(Path(log_path))]
    with dbt_connection(database_url):
        return dbtRunner().invoke(cli)


def failed_nodes(result: Any) -> list[str]:
    """Names of the nodes that errored, failed their tests or were skipped."""
    out: list[str] = []
    for r in getattr(result.result, "results", None) or []:
        status = str(getattr(r.status, "value", r.status)).lower()
        if status in FAILED_STATUSES:
            node = r.node
            out.append(f"{node.resource_type}:{node.name} ({status}: {r.message or ''})".strip())
    return out


def transform(
    full_refresh: bool = False, database_url: str | None = None, quiet: bool = False
) -> Any:
    """The time zones of new geo positions (crm/timezones.py: SQL cannot look them up), then
    `dbt build`: seeds, models and tests, in DAG order. Raises TransformError on failure.

    `quiet` keeps dbt to its errors (the demo prints its own summary)."""
    from crm.settings import shop_timezone
    from crm.timezones import update_geo_timezones

    if database_url is None:
        from crm.settings import database_url as configured

        database_url = configured()
    try:
        dbt_vars = {"shop_timezone": shop_timezone()}
    except ValueError as exc:
        raise TransformError(str(exc)) from None
    update_geo_timezones(database_url, full=full_refresh)
    args = (["--quiet"] if quiet else []) + ["build"] + (["--full-refresh"] if full_refresh else [])
    args += ["--vars", json.dumps(dbt_vars)]
    result = run_dbt(args, database_url)
    failed = failed_nodes(result) if result.result is not None else []
    if not result.success or failed:
        if result.exception is not None and not failed:
            raise TransformError(f"dbt build could not run: {result.exception}")
        raise TransformError(
            "dbt build failed: " + "; ".join(failed or ["(no node results)"]), failed
        )
    return result


def transform_command(
    full_refresh: bool = typer.Option(
        False, "--full-refresh", help="Rebuild incremental models from all of raw.events."
    ),
) -> None:
    """Look up the time zones of new geo positions, then run the dbt project: staging, identity
    graph and the CRM tables, with their tests."""
    from rich.console import Console

    from crm.db.migrate import migrate
    from crm.settings import database_url

    console = Console(stderr=True)
    url = database_url()
    migrate(url)  # raw.events must exist before dbt reads it
    try:
        result = transform(full_refresh=full_refresh, database_url=url)
    except TransformError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    n = len(getattr(result.result, "results", None) or [])
    console.print(f"dbt build succeeded: {n} nodes")
