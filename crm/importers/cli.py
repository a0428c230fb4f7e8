"""`crm import ...`: loaders for real shop data sets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console

import_app = typer.Typer(help="Import real shop data into raw.events.", no_args_is_help=True)
console = Console(stderr=True)

PATH_ARG = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="File to import.")
DB_OPTION = typer.Option(None, "--database-url", help="Default: the CRM database.")


def _run(make_plan: Callable, path: Path, database_url: str | None) -> None:
    from crm.db.migrate import migrate
    from crm.importers import load

    if database_url is None:
        from crm.settings import database_url as default_url

        database_url = default_url()
    migrate(database_url)
    plan = make_plan(path)
    result = load(plan, database_url)
    skipped = ", ".join(f"{k} {v:,}" for k, v in plan.skipped.items()) or "none"
    console.print(
        f"{path.name}: {plan.rows_read:,} rows -> {len(plan.events):,} events; "
        f"accepted {result.accepted:,}, rejected {result.rejected:,}; skipped: {skipped}"
    )
    if result.rejected:
        raise typer.Exit(1)


@import_app.command("online-retail")
def online_retail(path: Path = PATH_ARG, database_url: str | None = DB_OPTION) -> None:
    """UCI Online Retail CSV: invoices -> order_complete (cancellations skipped, counted)."""
    from crm.importers.online_retail import online_retail_events

    _run(online_retail_events, path, database_url)


@import_app.command("cdnow")
def cdnow(path: Path = PATH_ARG, database_url: str | None = DB_OPTION) -> None:
    """CDNOW master log: each purchase -> purchase_history."""
    from crm.importers.cdnow import cdnow_events

    _run(cdnow_events, path, database_url)
