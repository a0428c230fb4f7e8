"""`crm ui`: the control room, Dagster's webserver and daemon together on the project's instance.

`dagster dev` starts both (and one code server they share, so the code location, dbt manifest
included, loads once) from workspace.yaml, with DAGSTER_HOME prepared by
dagster_project.instance (run, event-log and schedule storage in PostgreSQL, telemetry off).
The daemon is what runs the schedules and the queued runs launched from the UI.

Signals: dagster dev copies its SIGINT handler to SIGTERM, so a copy started where SIGINT is
ignored (a background job, a service manager) would ignore both. It runs here in its own
process group; this process catches Ctrl-C and SIGTERM before starting it (caught signals are
reset to the default in the child, ignored ones would not be), passes either on as SIGINT so
dagster shuts its children down in order, and then ends whatever of the group is still alive
(a run worker the daemon launched, say), so nothing outlives `crm ui`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import typer

from crm.settings import PROJECT_ROOT

WORKSPACE = PROJECT_ROOT / "workspace.yaml"
# dagster dev itself waits up to 10 s for each of its children before killing them.
GRACEFUL_SECONDS = 40.0
TERM_SECONDS = 10.0


def dagster_dev_args(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "dagster", "dev", "--workspace", str(WORKSPACE),
            "--host", host, "--port", str(port)]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal is still a member
        return True
    return True


def _wait_group(pgid: int, seconds: float) -> bool:
    """True once no process of the group is left (zombies reaped by whoever owns them)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.1)
    return not group_alive(pgid)


def stop_group(proc: subprocess.Popen, log: Callable[[str], None]) -> None:
    """SIGINT to dagster dev (its orderly shutdown), then SIGTERM and SIGKILL to what is left
    of its process group."""
    pgid = proc.pid
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(GRACEFUL_SECONDS)
        except subprocess.TimeoutExpired:
            log("dagster dev did not stop in time; terminating its process group")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not group_alive(pgid):
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(TERM_SECONDS)  # the leader is our child: reaped here, not a zombie
        if _wait_group(pgid, TERM_SECONDS):
            break
    proc.wait()


def _webserver_up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/server_info", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def serve(host: str, port: int, database_url: str, log: Callable[[str], None]) -> int:
    """Run webserver and daemon until Ctrl-C / SIGTERM or until they exit; returns the code."""
    from dagster_project.instance import ensure_instance

    home = ensure_instance(database_url)
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1",
           "CRM_DATABASE_URL": os.environ.get("CRM_DATABASE_URL") or database_url}
    stop_requested: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:
        stop_requested.append(signum)

    # Installed before the child starts: caught signals become SIG_DFL in the child at exec.
    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen(dagster_dev_args(host, port), cwd=PROJECT_ROOT, env=env,
                                process_group=0)
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        log(f"Dagster instance: {home}")
        log(f"starting the Dagster webserver and daemon; open {url} (Ctrl-C stops both)")
        ready = False
        try:
            while not stop_requested and proc.poll() is None:
                if not ready and _webserver_up(url):
                    ready = True
                    log(f"Dagster UI ready: {url}")
                time.sleep(0.5)
        finally:
            stop_group(proc, log)
        if stop_requested:
            log("Dagster webserver and daemon stopped")
            return 0
        return proc.returncode or 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def ui_command(
    host: str = typer.Option("127.0.0.1", help="Address the webserver listens on."),
    port: int = typer.Option(3000, help="Port the webserver listens on."),
) -> None:
    """The Dagster UI and daemon (schedules, runs launched from the UI) on the project's
    instance; stops both on Ctrl-C or SIGTERM."""
    from rich.console import Console

    from crm.db.migrate import migrate
    from crm.settings import database_url

    console = Console(stderr=True)
    url = database_url()
    migrate(url)  # the ingestion assets read raw.events
    code = serve(host, port, url, lambda message: console.print(message, highlight=False))
    raise typer.Exit(code)
