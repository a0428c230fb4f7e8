"""The `crm` command: database, write keys, collector, ingestion and the demo."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from crm.dbt_command import dbt_command
from crm.importers.cli import import_app
from crm.train import mlflow_ui_command, train_command
from crm.transform import transform_command
from crm.ui import ui_command
from push.cli import campaign_app
from simulator.cli import simulate

app = typer.Typer(help="Customer-data and CRM pipeline for online shops.", no_args_is_help=True)
db_app = typer.Typer(help="The PostgreSQL database (embedded by default).", no_args_is_help=True)
keys_app = typer.Typer(help="Write keys for the collector.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(import_app, name="import")
app.add_typer(campaign_app, name="campaign")
app.command("simulate")(simulate)
app.command("transform")(transform_command)
app.command("train")(train_command)
app.command("mlflow-ui")(mlflow_ui_command)
app.command("ui")(ui_command)
# Every argument goes to dbt as given, --help included.
app.command("dbt", add_help_option=False, context_settings={
    "allow_extra_args": True, "ignore_unknown_options": True})(dbt_command)
console = Console(stderr=True)


def _url() -> str:
    from crm.settings import database_url

    return database_url()


def _migrated_url() -> str:
    from crm.db.migrate import migrate

    url = _url()
    migrate(url)
    return url


@db_app.command("up")
def db_up() -> None:
    """Start the embedded server (or reuse the running one) and apply migrations."""
    from crm.settings import configured_database_url

    if configured_database_url():
        console.print("CRM_DATABASE_URL is set: using that server, nothing to start.")
    url = _migrated_url()
    print(url)


@db_app.command("down")
def db_down() -> None:
    """Stop the embedded server."""
    from crm.db.embedded import EmbeddedPostgres
    from crm.settings import configured_database_url, state_dir

    if configured_database_url():
        console.print("CRM_DATABASE_URL is set: that server is not ours to stop.")
        return
    stopped = EmbeddedPostgres(state_dir() / "pgdata").stop()
    console.print("stopped" if stopped else "not running")


@db_app.command("url")
def db_url() -> None:
    """Print the connection URL (alone on the last line)."""
    print(_url())


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending SQL migrations from sql/."""
    from crm.db.migrate import migrate

    applied = migrate(_url())
    console.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@keys_app.command("create")
def keys_create(
    name: str,
    origin: list[str] = typer.Option(
        [], "--origin", help="Browser origin allowed to send with this key ('*' for any)."
    ),
) -> None:
    """Create a write key; prints it alone on the last line (it is not shown again)."""
    from crm import keys

    try:
        key = keys.create(_migrated_url(), name, origin)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"write key {name!r} created; store it now, only its hash is kept")
    print(key)


@keys_app.command("list")
def keys_list() -> None:
    """List write keys (prefixes only)."""
    from crm import keys

    table = Table("name", "prefix", "origins", "created", "revoked")
    for k in keys.list_keys(_migrated_url()):
        table.add_row(
            k["name"], k["key_prefix"] + "...", ", ".join(k["allowed_origins"]) or "-",
            f"{k['created_at']:%Y-%m-%d %H:%M}",
            f"{k['revoked_at']:%Y-%m-%d %H:%M}" if k["revoked_at"] else "",
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(name: str) -> None:
    """Revoke a write key (the collector stops accepting it within seconds)."""
    from crm import keys

    if not keys.revoke(_migrated_url(), name):
        console.print(f"[red]error:[/] no active write key named {name!r}")
        raise typer.Exit(1)
    console.print(f"revoked {name!r}")


@app.command()
def collector(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    max_body_bytes: int = typer.Option(1_000_000, help="Largest accepted body (after gzip)."),
    max_batch_events: int = typer.Option(1_000, help="Most events in one request."),
    max_event_bytes: int = typer.Option(32 * 1024, help="Largest event, as JSON."),
    max_listed_rejections: int = typer.Option(
        100, help="Rejections of one request stored and answered one by one; one row sums up "
        "the rest."
    ),
    body_timeout: float = typer.Option(10.0, help="Seconds to receive a whole body."),
    head_timeout: float = typer.Option(10.0, help="Seconds to receive a request's headers."),
    max_head_bytes: int = typer.Option(16 * 1024, help="Largest request line + headers."),
    max_headers: int = typer.Option(100, help="Most request headers."),
    keepalive: float = typer.Option(5.0, help="Seconds an idle keep-alive connection stays."),
    max_connections: int = typer.Option(2_000, help="Open connections before 503."),
    metrics_token: str = typer.Option(
        None, envvar="CRM_METRICS_TOKEN", show_default=False,
        help="Bearer token for GET /metrics (off without one).",
    ),
    max_wait_ms: float = typer.Option(2.0, help="Longest a request waits to share a commit."),
    max_flush_events: int = typer.Option(
        1_000, help="Most events in one commit; smaller flushes overlap better on 2 lanes."
    ),
    workers: int = typer.Option(1, min=1, help="Worker processes sharing the port."),
) -> None:
    """Run the HTTP collector (POST /v1/events, /v1/tracker.js, /healthz, /metrics)."""
    from collector.app import CollectorConfig, serve

    config = CollectorConfig(
        _migrated_url(), max_body_bytes=max_body_bytes, max_batch_events=max_batch_events,
        max_event_bytes=max_event_bytes, max_listed_rejections=max_listed_rejections,
        body_timeout_seconds=body_timeout, head_timeout_seconds=head_timeout,
        max_head_bytes=max_head_bytes, max_headers=max_headers, keepalive_seconds=keepalive,
        max_connections=max_connections, metrics_token=metrics_token,
        max_wait_ms=max_wait_ms, max_flush_events=max_flush_events,
    )
    console.print(f"collector listening on http://{host}:{port}")
    serve(config, host, port, workers)


@app.command()
def ingest(
    file: str = typer.Argument(
        ..., help="Newline-delimited JSON events (plain or gzip), or - for stdin."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    workers: int = typer.Option(
        0, "--workers", min=0, help="Processes that validate and write (0: one per core)."),
) -> None:
    """Load events from a JSONL file through the collector's validation and storage,
    streaming: any size in bounded memory."""
    from collector.ingest import ingest_file

    if file != "-" and not Path(file).is_file():
        console.print(f"[red]error:[/] no such file: {file}")
        raise typer.Exit(2)
    summary = ingest_file(file, database_url=_migrated_url(), progress=not quiet,
                          workers=workers or None)
    for r in summary.examples:
        console.print(f"  rejected item {r.index}: {'; '.join(r.errors)}")
    print(f"accepted {summary.accepted}, rejected {summary.rejected}")


@app.command()
def demo(
    visitors: int = typer.Option(3_000, help="Simulated visitors."),
    days: int = typer.Option(30, help="Simulated days of traffic."),
    seed: int = typer.Option(7, help="Random seed (same seed, same traffic)."),
    data: Path = typer.Option(
        None, "--data", file_okay=False, help="Folder of the real data sets "
        "(online_retail_sample.csv, cdnow_master.txt); default ../shared/data."),
) -> None:
    """The whole pipeline: simulated traffic through the collector, the real data sets
    imported, every asset materialised through Dagster, and a summary."""
    from crm.demo import DEFAULT_DATA_DIR, DemoError, run_demo

    try:
        run_demo(_migrated_url(), visitors, days, seed, data or DEFAULT_DATA_DIR)
    except DemoError as exc:  # the message names the stage, its cause and the log file
        console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None


@app.command("fake-push")
def fake_push(
    folder: Path = typer.Option(Path(".fake-push"), help="Where the test credentials go."),
    fcm_port: int = typer.Option(0, help="Fake FCM port (0: any free port)."),
    apns_port: int = typer.Option(0, help="Fake APNs port (0: any free port)."),
) -> None:
    """TEST SERVERS: start a local fake FCM and fake APNs with generated test credentials and
    print the CRM_FCM_* / CRM_APNS_* settings to export; runs until Ctrl-C."""
    import time

    from push.fake_servers import FakePush

    fakes = FakePush(folder.resolve())
    env = fakes.start(fcm_port, apns_port)
    console.print("[yellow]TEST push servers (fake FCM, fake APNs) - not Google's or Apple's[/]")
    for name, value in env.items():
        print(f"export {name}={value}")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        fakes.stop()


def main() -> None:
    app()
