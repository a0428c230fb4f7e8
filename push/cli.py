"""`crm campaign list | run NAME [--dry-run] [--now ISO] | deliver`: campaigns from the terminal.

SIGTERM or Ctrl-C stops a run gracefully: `stopped by SIGTERM: N sent, M left planned` and
the signal's exit status (143, 130); the same command again sends the rest, each once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from push.stop import RunStopped

if TYPE_CHECKING:
    import psycopg

campaign_app = typer.Typer(help="Push campaigns (files in campaigns/ and CRM_CAMPAIGNS_DIR).",
                           no_args_is_help=True)
console = Console(stderr=True)


@campaign_app.callback()
def _campaign_dirs() -> None:
    # Checked once for every subcommand, so a wrong CRM_CAMPAIGNS_DIR is one clear line.
    from push.campaign import CampaignFileError, extra_campaign_dirs

    try:
        extra_campaign_dirs()
    except CampaignFileError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None


def _url() -> str:
    from crm.db.migrate import migrate
    from crm.settings import database_url

    url = database_url()
    migrate(url)
    return url


def _now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        console.print(f"[red]error:[/] --now {value!r} is not an ISO date-time "
                      "(e.g. 2026-06-01T09:00:00+00:00)")
        raise typer.Exit(2) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _stopped(exc: RunStopped) -> NoReturn:
    """A run stopped by SIGTERM / Ctrl-C: what it sent, what is left, and the signal's status."""
    if exc.line:
        print(exc.line)
    print(str(exc), flush=True)
    raise typer.Exit(exc.exit_code)


@campaign_app.command("list")
def list_command() -> None:
    """The campaign files and, for each, how many people its audience has now."""
    import psycopg

    from push.audience import AudienceError, build_audience
    from push.campaign import CampaignFileError, campaign_files, load_campaign
    from push.run import trigger_people

    table = Table("campaign", "file", "when", "send time", "audience", "reachable", "skips")
    url = _url()
    with psycopg.connect(url, autocommit=True) as conn:
        for path in campaign_files():
            try:
                c = load_campaign(path)
            except CampaignFileError as exc:
                table.add_row("?", path.name, "", "", f"[red]{escape(str(exc))}[/]", "", "")
                continue
            when = c.schedule or (f"trigger: {c.audience.trigger}" if c.audience.trigger else "")
            try:
                # A triggered campaign's audience is whoever its trigger names right now.
                people = trigger_people(conn, c, datetime.now(UTC), None)
                audience = build_audience(conn, c, people=people)
                skips = ", ".join(f"{k}={v}" for k, v in sorted(audience.skip_counts().items()))
                reach = str(len({r.person_id for r in audience.recipients}))
                table.add_row(c.name, path.name, when, c.send_time, str(audience.people),
                              reach, skips)
            except AudienceError as exc:
                table.add_row(c.name, path.name, when, c.send_time,
                              f"[yellow]{escape(str(exc))}[/]", "", "")
    Console().print(table)


@campaign_app.command("run")
def run_command(
    name: str = typer.Argument(
        ..., help="The campaign's name (see `crm campaign list`) or a campaign file's path."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan and show; write and send nothing."),
    now: str = typer.Option(None, "--now", help="The run's clock, ISO 8601 (default: now)."),
    run_id: str = typer.Option(None, "--run-id", help="Default: the UTC date of --now."),
) -> None:
    """Plan the campaign's run in the ledger and send what is due; ends with
    `sent=<n> skipped=<n> failed=<n>`."""
    from push.audience import AudienceError
    from push.campaign import CampaignFileError
    from push.message import MessageTemplateError
    from push.run import CampaignBusyError, run_campaign

    try:
        s = run_campaign(_url(), name, now=_now(now), dry_run=dry_run, run_id=run_id)
    except (CampaignFileError, AudienceError, MessageTemplateError, CampaignBusyError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except RunStopped as exc:
        _stopped(exc)
    print(f"campaign {s.campaign} run {s.run_id}{' (dry run: nothing written)' if dry_run else ''}")
    print(f"audience: {s.audience} people, {s.recipients} reachable")
    if s.skips:
        print("skipped by reason: " + ", ".join(f"{k}={v}" for k, v in s.skips.items()))
    if s.failures:
        print("failed by reason: " + ", ".join(f"{k}={v}" for k, v in s.failures.items()))
    if s.waiting:
        print(f"waiting for their send time: {s.waiting}")
    if s.sample:
        print(f"sample message ({s.sample['channel']}, at {s.sample['send_at']}): "
              f"{s.sample['title']} | {s.sample['body']}")
    if dry_run:
        print(f"would send: {s.to_send}")
    print(s.line())


@campaign_app.command("deliver")
def deliver_command(
    now: str = typer.Option(None, "--now", help="The clock, ISO 8601 (default: now)."),
) -> None:
    """Send every campaign's planned rows whose send time has come."""
    from push.run import CampaignBusyError, deliver_due

    try:
        out = deliver_due(_url(), _now(now))
    except CampaignBusyError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except RunStopped as exc:
        _stopped(exc)
    for name, totals in out.items():
        print(f"{name}: sent={totals.get('sent', 0)} failed={totals.get('failed', 0)}")
    sent = sum(t.get("sent", 0) for t in out.values())
    failed = sum(t.get("failed", 0) for t in out.values())
    print(f"sent={sent} skipped=0 failed={failed}")


def _on_opt_out_list(change: Callable[[psycopg.Connection], tuple[str, object]]
                     ) -> tuple[str, object]:
    """Run an opt-out list change; a name that matches nobody (or several people) is an
    error."""
    import psycopg

    from push.opt_out import UnknownPersonError

    with psycopg.connect(_url(), autocommit=True) as conn:
        try:
            return change(conn)
        except UnknownPersonError as exc:
            console.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(1) from None


@campaign_app.command("opt-out")
def opt_out_command(
    who: str = typer.Argument(..., help="Person id, e-mail, phone or client id."),
    source: str = typer.Option("crm cli", "--source", help="Where the request came from."),
) -> None:
    """Put a person on the push opt-out list: every campaign skips them (`opted_out`)."""
    from push.opt_out import opt_out

    person, new = _on_opt_out_list(lambda conn: opt_out(conn, who, source))
    print(f"opted out: {person}" + ("" if new else " (already on the list)"))


@campaign_app.command("opt-in")
def opt_in_command(
    who: str = typer.Argument(..., help="Person id, e-mail, phone or client id."),
) -> None:
    """Take a person off the push opt-out list: campaigns may push them again."""
    from push.opt_out import opt_in

    person, removed = _on_opt_out_list(lambda conn: opt_in(conn, who))
    print(f"opted in: {person}" + ("" if removed else " (was not on the list)"))
