"""`crm simulate`: the command-line entry of the simulator."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import typer
from rich.console import Console

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
) -> None:
    """Simulate shoppers on a shop: events to a collector or a file, hidden truth beside them."""
    from simulator import SimConfig
    from simulator import simulate as run

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

    t0 = time.perf_counter()
    sim = run(cfg)
    elapsed = time.perf_counter() - t0
    n = len(sim.lines)
    console.print(f"simulated {n:,} events of {visitors:,} people in {elapsed:.1f} s "
                  f"({n / max(elapsed, 1e-9):,.0f} events/s)")
    if out is not None:
        from simulator.output import write_jsonl
        from simulator.truth import truth_dir_for, write_truth_files

        write_jsonl(sim.lines, out)
        folder = truth_dir_for(out)
        write_truth_files(sim.truth, folder, cfg)
        console.print(f"events: {out}\ntruth:  {folder}/")
        return

    from simulator.output import post_lines
    from simulator.truth import write_truth_tables

    if database_url is None:
        from crm.settings import database_url as default_url

        database_url = default_url()
    write_truth_tables(sim.truth, database_url, sim.run_id, cfg)
    accepted, rejected = post_lines(sim.lines.to_list(), url, write_key,  # type: ignore[arg-type]
                                    batch_size=batch_size, concurrency=concurrency)
    console.print(f"posted {n:,} events: {accepted:,} accepted, {rejected:,} rejected; "
                  f"truth in schema sim, run_id {sim.run_id!r}")
