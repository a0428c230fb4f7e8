"""`crm dbt ARGS...`: dbt itself, for analysts, against the database every other command uses.

Any arguments go to dbt unchanged (`run -s users+`, `test`, `docs generate`, `docs serve`,
`--help`). The connection comes from `crm.settings.database_url()` through the variables
dbt/profiles.yml reads (crm.transform.dbt_env), and the project and profiles folder from
dbt's own environment variables (DBT_PROJECT_DIR, DBT_PROFILES_DIR), so no profile is written
by hand and no flag is appended that a dbt subcommand might not know. The exit code is dbt's.

Two defaults that plain dbt lacks, each overridden by the analyst's own flag:
- the shop's time zone (CRM_SHOP_TIMEZONE) as the `shop_timezone` var, as `crm transform`
  passes it, when the command takes `--vars` and none was given;
- a selector that matches nothing is an error (dbt only warns and exits 0, so a typo in
  `-s usres+` would pass unnoticed in a script).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import typer

from crm.transform import DBT_DIR, dbt_env

DBT_EXECUTABLE = Path(sys.executable).with_name("dbt")
# dbt subcommands that accept --vars (the first one or two words of the command line).
TAKES_VARS = {"build", "run", "test", "compile", "seed", "snapshot", "show", "list", "ls",
              "parse", "run-operation", "source freshness", "docs generate"}
NO_MATCH_IS_ERROR = json.dumps({"error": ["NoNodesForSelectionCriteria"]})


def _subcommand(args: list[str]) -> str:
    """`docs generate` / `source freshness` / `run` ..., skipping dbt's global flags."""
    words = [a for a in args if not a.startswith("-")][:2]
    two = " ".join(words)
    return two if two in TAKES_VARS else (words[0] if words else "")


def dbt_arguments(args: list[str], shop_timezone: str) -> list[str]:
    has_vars = any(a == "--vars" or a.startswith("--vars=") for a in args)
    if has_vars or _subcommand(args) not in TAKES_VARS:
        return list(args)
    return [*args, "--vars", json.dumps({"shop_timezone": shop_timezone})]


def dbt_environment(database_url: str) -> dict[str, str]:
    """os.environ plus the connection, the project folders and the defaults above."""
    env = {**os.environ, **dbt_env(database_url)}
    env.setdefault("DBT_PROJECT_DIR", str(DBT_DIR))
    env.setdefault("DBT_PROFILES_DIR", str(DBT_DIR))
    env.setdefault("DBT_WARN_ERROR_OPTIONS", NO_MATCH_IS_ERROR)
    # Tests (and anyone keeping several databases apart) move target/ and logs/.
    for ours, dbts in (("CRM_DBT_TARGET_PATH", "DBT_TARGET_PATH"),
                       ("CRM_DBT_LOG_PATH", "DBT_LOG_PATH")):
        if os.environ.get(ours):
            env.setdefault(dbts, os.environ[ours])
    return env


def run_dbt_cli(args: list[str], database_url: str, shop_timezone: str) -> int:
    """dbt as a child process with the terminal; returns its exit code.

    Ctrl-C reaches dbt directly (same process group), so this process ignores it and waits for
    dbt to finish its own shutdown (`docs serve` stops that way); SIGTERM is passed on.
    """
    proc = subprocess.Popen([str(DBT_EXECUTABLE), *dbt_arguments(args, shop_timezone)],
                            env=dbt_environment(database_url), cwd=DBT_DIR)
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


def dbt_command(ctx: typer.Context) -> None:
    """Run dbt with any arguments (`crm dbt run -s users+`, `crm dbt test`, `crm dbt docs
    generate`, `crm dbt docs serve`) on the CRM database; exits with dbt's code."""
    from rich.console import Console

    from crm.db.migrate import migrate
    from crm.settings import database_url, shop_timezone

    console = Console(stderr=True)
    try:
        zone = shop_timezone()
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    if not DBT_EXECUTABLE.exists():
        console.print(f"[red]error:[/] dbt is not installed beside this Python ({DBT_EXECUTABLE})")
        raise typer.Exit(2)
    url = database_url()
    migrate(url)  # dbt's sources (raw.events) must exist
    raise typer.Exit(run_dbt_cli(list(ctx.args), url, zone))
