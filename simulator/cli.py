"""`crm simulate`: the command-line entry of the simulator."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import typer
from rich.console import Console

from simulator.config import DEFAULT_CHUNK_VISITORS

console = Console(stderr=True)


def simulate(
    visitors: int = typer.Option(1000, "--visitors", min=1, help="Simulated people."),
    days: int = typer.Option(30, "--days", min=1, help="Length of the simulated period."),
    seed: int = typer.Option(1, "--seed", help="Same seed and options: byte-identical output."),
    start: str = typer.Option(
        "2026-09-01", "--start", help="First day of the period (UTC), YYYY-MM-DD."
    ),
    url: str | None = typer.Option(None, "--url", help="Collector base URL to POST to."),
    write_key: str | None = typer.Option(None, "--write-key", help="Collector write key."),
    out: Path | None = typer.Option(
        None, "--out", help="Write JSON lines here; the truth goes to <name>.truth/ beside it."
    ),
    database_url: str | None = typer.Option(
        None, "--database-url",
        help="Where the truth tables (schema sim) go when posting; default: the CRM database.",
    ),
    invalid_rate: float | None = typer.Option(None, help="Share of invalid events."),
    retry_rate: float | None = typer.Option(None, help="Share of events sent twice."),
    late_rate: float | None = typer.Option(None, help="Share of events arriving days late."),
    junk_rate: float | None = typer.Option(None, help="Share of events with a junk client_id."),
    no_hazards: bool = typer.Option(False, "--no-hazards", help="A clean stream, no hazards."),
    batch_size: int = typer.Option(1000, help="Events per POST."),
    concurrency: int = typer.Option(4, help="Concurrent POST requests."),
    chunk_visitors: int = typer.Option(
        DEFAULT_CHUNK_VISITORS, "--chunk-visitors", min=1,
        help="People simulated at a time: bounds memory; the output is the same for any value.",
    ),
) -> None:
    """Simulate shoppers on a shop: events to a collector or a file, hidden truth beside them.

    Streams: `--chunk-visitors` people at a time, so memory stays bounded at any size."""
    from simulator import SimConfig

    if (out is None) == (url is None):
        raise typer.BadParameter("give exactly one of --out FILE or --url URL (with --write-key)")
    if url is not None and not write_key:
        raise typer.BadParameter("--url needs --write-key")
    cfg = SimConfig(visitors=visitors, days=days, seed=seed, start=date.fromisoformat(start))
    if no_hazards:
        cfg = replace(cfg, family_device_rate=0, kiosk_user_rate=0, junk_client_id_rate=0,
                      broken_tracker_rate=0, retry_rate=0, late_rate=0, skewed_clock_rate=0,
                      invalid_rate=0)
    overrides = {"invalid_rate": invalid_rate, "retry_rate": retry_rate, "late_rate": late_rate,
                 "junk_client_id_rate": junk_rate}
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})

    from simulator.run import post_run, write_files

    t0 = time.perf_counter()
    if out is not None:
        from simulator.truth import truth_dir_for

        result = write_files(cfg, out, chunk_visitors=chunk_visitors)
        _done(result.lines, visitors, t0)
        console.print(f"events: {out}\ntruth:  {truth_dir_for(out)}/")
        return

    from simulator import run_id_for

    if database_url is None:
        from crm.settings import database_url as default_url

        database_url = default_url()
    result = post_run(cfg, url, write_key, database_url,  # type: ignore[arg-type]
                      chunk_visitors=chunk_visitors, batch_size=batch_size,
                      concurrency=concurrency)
    _done(result.lines, visitors, t0)
    console.print(f"posted {result.lines:,} events: {result.accepted:,} accepted, "
                  f"{result.rejected:,} rejected; truth in schema sim, "
                  f"run_id {run_id_for(cfg)!r}")


def _done(n: int, visitors: int, t0: float) -> None:
    elapsed = time.perf_counter() - t0
    console.print(f"simulated {n:,} events of {visitors:,} people in {elapsed:.1f} s "
                  f"({n / max(elapsed, 1e-9):,.0f} events/s)")
