"""`crm demo`: the whole pipeline on the embedded database, as a new user first sees it.

1. A collector starts and a simulated shop's traffic is posted to it over HTTP (with the
   simulator's hazards: retries, junk ids, late and invalid events).
2. The real data sets in ../shared/data (UCI Online Retail sample, CDNOW) are imported through
   the same validation path.
3. Every asset is materialised through Dagster: the job `nightly_whole_graph` of the code
   location the UI loads (dagster_project.definitions), on the project's persistent instance,
   so the run is there later in `crm ui`.
4. A summary read back from the CRM database and from Dagster's own event log.

Running it again is safe: events already stored keep their ids (deduplicated), the dbt
manifest is reused when no dbt file changed, and a champion model is kept unless the new fit
beats it; the second run says so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

from crm import keys
from crm.demo_log import chatter_to
from crm.demo_push import Deliveries, PushSetup, push_services, read_deliveries, totals
from crm.settings import PROJECT_ROOT, state_dir

console = Console()

DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
JOB_NAME = "nightly_whole_graph"
# (importer, file in the data folder, raw.events source it writes)
IMPORTS = (
    ("online-retail", "online_retail_sample.csv", "import:online-retail"),
    ("cdnow", "cdnow_master.txt", "import:cdnow"),
)


class DemoError(RuntimeError):
    """A stage of the demo failed; the message says which and why."""


@dataclass
class ModelQuality:
    model: str
    score: str
    champion: float | None
    baseline: float | None
    passed: bool
    version: str
    promoted: bool


@dataclass
class DemoSummary:
    """What the demo prints at the end, every figure read back from the database."""

    posted: int = 0
    answered_accepted: int = 0
    answered_rejected: int = 0
    new_http_rows: int = 0
    imported_new: dict[str, int] = field(default_factory=dict)
    events_by_source: dict[str, tuple[int, int]] = field(default_factory=dict)
    people: int = 0
    authorised: int = 0
    devices: int = 0
    segments: dict[tuple[str, str], int] = field(default_factory=dict)
    lifecycle: dict[str, float] = field(default_factory=dict)
    models: list[ModelQuality] = field(default_factory=list)
    pushes: Deliveries | None = None
    push_setup: PushSetup | None = None
    log: Path | None = None
    run_id: str = ""
    run_status: str = ""
    assets_materialised: int = 0
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_collector(database_url: str, port: int, *options: str) -> Iterator[str]:
    """A collector subprocess for the duration of the block; yields its base URL."""
    env = {**os.environ, "CRM_DATABASE_URL": database_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crm", "collector", "--port", str(port), *options],
        env=env, cwd=PROJECT_ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the collector exited with code {proc.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the collector did not become healthy within 30 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@contextmanager
def _stage(summary: DemoSummary, name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except DemoError as exc:
        raise DemoError(f"stage {name} failed: {exc}\nthe full log: {summary.log}") from exc
    except Exception as exc:  # a stage's unexpected error: name the stage and the log
        traceback.print_exc()  # stderr is the log file here
        raise DemoError(f"stage {name} failed: {type(exc).__name__}: {exc}\n"
                        f"the full log (with the traceback): {summary.log}") from exc
    summary.stage_seconds[name] = time.perf_counter() - started


def run_demo(database_url: str, visitors: int, days: int, seed: int,
             data_dir: Path = DEFAULT_DATA_DIR, progress: bool = True) -> DemoSummary:
    """The whole demo on an already migrated database; raises DemoError if a stage fails.
    dbt's, MLflow's and Dagster's output goes to demo.log in the state folder."""
    summary = DemoSummary(log=state_dir() / "demo.log")
    started = time.perf_counter()
    console.print(f"logs of dbt, MLflow and Dagster: {summary.log}")
    with chatter_to(summary.log, console), push_services(state_dir() / "fake-push") as setup:
        summary.push_setup = setup
        console.print(f"push services: {setup.describe()}")
        with _stage(summary, "traffic"):
            post_traffic(database_url, visitors, days, seed, summary, progress)
        with _stage(summary, "imports"):
            import_real_data(database_url, data_dir, summary)
        with _stage(summary, "dagster"):
            materialise_everything(database_url, seed, summary, progress)
        read_summary(database_url, summary)
        show_summary(summary)
    console.print(f"\n[bold]demo done in {time.perf_counter() - started:.0f} s[/] ("
                  + ", ".join(f"{k} {v:.0f} s" for k, v in summary.stage_seconds.items()) + ")")
    return summary


# -- 1. traffic through the HTTP collector ---------------------------------------------------

def post_traffic(database_url: str, visitors: int, days: int, seed: int,
                 summary: DemoSummary, progress: bool) -> None:
    from simulator import SimConfig, simulate
    from simulator.output import post_lines

    key = keys.create(database_url, "demo", replace=True)
    sim = simulate(SimConfig(visitors=visitors, days=days, seed=seed))
    console.rule("1. shop traffic through the collector")
    console.print(f"simulated {visitors:,} visitors over {days} days from {sim.config.start}: "
                  f"{len(sim.lines):,} events (seed {seed})")
    before = _count(database_url, "raw.events", "http:demo")
    with running_collector(database_url, _free_port()) as url:
        console.print(f"collector at {url}; posting the events over HTTP...")
        posted_at = time.perf_counter()
        accepted, rejected = post_lines(sim.lines, url, key, progress=progress)
        elapsed = time.perf_counter() - posted_at
    summary.posted, summary.answered_accepted, summary.answered_rejected = (
        len(sim.lines), accepted, rejected)
    summary.new_http_rows = _count(database_url, "raw.events", "http:demo") - before
    console.print(
        f"collector answered: {accepted:,} accepted, {rejected:,} rejected in {elapsed:.1f} s "
        f"({len(sim.lines) / elapsed:,.0f} events/s); {summary.new_http_rows:,} new rows in "
        f"raw.events, the other {accepted - summary.new_http_rows:,} accepted were retries or "
        "events already stored (same event_id), kept once")
    if before and summary.new_http_rows < accepted:
        summary.reused.append(
            f"traffic: {before:,} events were already stored; the re-sent ones were "
            f"deduplicated by event_id ({summary.new_http_rows:,} new rows)")


def _count(database_url: str, table: str, source: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table} WHERE source = %s",
                            (source,)).fetchone()[0]


# -- 2. the real data sets --------------------------------------------------------------------

def import_real_data(database_url: str, data_dir: Path, summary: DemoSummary) -> None:
    from crm.importers import load
    from crm.importers.cdnow import cdnow_events
    from crm.importers.online_retail import online_retail_events

    console.rule("2. real shop data")
    mappers = {"online-retail": online_retail_events, "cdnow": cdnow_events}
    for name, filename, source in IMPORTS:
        path = data_dir / filename
        if not path.is_file():
            raise DemoError(f"{name}: {path} not found (the data folder is set by --data)")
        before = _count(database_url, "raw.events", source)
        plan = mappers[name](path)
        result = load(plan, database_url, progress=False)
        new = _count(database_url, "raw.events", source) - before
        summary.imported_new[source] = new
        skipped = ", ".join(f"{k} {v:,}" for k, v in plan.skipped.items()) or "nothing"
        console.print(f"{path.name}: {plan.rows_read:,} rows -> {len(plan.events):,} events, "
                      f"{result.accepted:,} accepted, {result.rejected:,} rejected, "
                      f"{new:,} new in raw.events; skipped {skipped}")
        if before and new == 0:
            summary.reused.append(f"{path.name}: all {before:,} events already stored")


# -- 3. every asset through Dagster -----------------------------------------------------------

def _manifest_is_current() -> bool:
    """True when dbt's manifest exists and no dbt file is newer (dagster_project.dbt then
    reuses it instead of running `dbt parse`)."""
    from crm.transform import DBT_DIR

    target = Path(os.environ.get("CRM_DBT_TARGET_PATH") or "target")
    manifest = (target if target.is_absolute() else DBT_DIR / target) / "manifest.json"
    if not manifest.exists():
        return False
    built = manifest.stat().st_mtime
    files = [p for folder in ("models", "macros", "seeds", "tests")
             for p in (DBT_DIR / folder).rglob("*") if p.is_file()]
    return all(p.stat().st_mtime <= built for p in [*files, DBT_DIR / "dbt_project.yml"])


def _champions() -> dict[str, str]:
    """Current champion version of each model in MLflow (empty before the first run)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from ml.registry import CHAMPION, tracking_uri

    client = MlflowClient(tracking_uri())
    out = {}
    for model in ("lifecycle", "segments", "recs", "send-time"):
        with contextlib.suppress(MlflowException):  # no such model or alias yet
            out[model] = client.get_model_version_by_alias(f"crm-{model}", CHAMPION).version
    return out


def run_config(seed: int) -> dict[str, Any]:
    from dagster_project.models import MODELS

    return {
        # Dagster's console log goes to demo.log (stderr is the log file during the demo);
        # the terminal's progress comes from the event log below.
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
        "ops": {"__".join(spec.key.path): {"config": {"seed": seed}} for spec in MODELS},
    }


def materialise_everything(database_url: str, seed: int, summary: DemoSummary,
                           progress: bool) -> None:
    import dagster as dg

    from dagster_project.instance import ensure_instance

    console.rule(f"3. every asset through Dagster (job {JOB_NAME})")
    manifest_reused = _manifest_is_current()
    champions_before = _champions()
    home = ensure_instance(database_url)
    from dagster_project.definitions import defs  # prepares the dbt manifest on import

    if manifest_reused:
        summary.reused.append("dbt manifest: reused (no dbt file changed since it was parsed)")
    instance = dg.DagsterInstance.get()
    earlier = instance.get_runs_count(dg.RunsFilter(job_name=JOB_NAME))
    job = defs.resolve_job_def(JOB_NAME)
    graph = defs.resolve_asset_graph()
    total = sum(1 for k in graph.get_all_asset_keys() if graph.get(k).is_materializable)
    console.print(f"Dagster instance {home} ({earlier} earlier runs of {JOB_NAME}); "
                  f"{total} assets, {len(graph.asset_check_keys)} checks")
    run_id = str(uuid.uuid4())
    watcher = _ProgressWatcher(run_id, total, enabled=progress)
    watcher.start()
    try:
        result = job.execute_in_process(run_config=run_config(seed), instance=instance,
                                        run_id=run_id, raise_on_error=False)
    finally:
        watcher.stop()
    summary.run_id = run_id
    run = instance.get_run_by_id(run_id)
    summary.run_status = run.status.value if run else "UNKNOWN"
    _read_run(instance, run_id, summary)
    if not result.success:
        failures = [_failure(e) for e in result.all_events if e.is_step_failure]
        raise DemoError(f"Dagster run {run_id} failed: " + "; ".join(
            failures or [e.message for e in result.all_events if e.is_failure]))
    kept = [q.model for q in summary.models
            if not q.promoted and champions_before.get(q.model) == q.version]
    if kept:
        summary.reused.append("champion kept (the new fit did not beat it): "
                              + ", ".join(f"{m} v{champions_before[m]}" for m in kept))
    if earlier:
        summary.reused.append(f"Dagster instance: this is run {earlier + 1} of {JOB_NAME}")


def _failure(event: Any) -> str:
    """A failed step and the error that started it (Dagster wraps it in its own)."""
    error = event.step_failure_data.error if event.step_failure_data else None
    if error is None:
        return f"step {event.step_key}: {event.message}"
    while error.cause is not None:
        error = error.cause
    message = error.message.strip()  # usually "ClassName: text" already
    if error.cls_name and not message.startswith(error.cls_name):
        message = f"{error.cls_name}: {message}"
    return f"step {event.step_key}: {message}"


class _ProgressWatcher(threading.Thread):
    """Per-step lines and a live status, read from the run's event log while it executes
    (execute_in_process runs in the main thread, where Dagster expects to be)."""

    def __init__(self, run_id: str, total_assets: int, enabled: bool) -> None:
        super().__init__(daemon=True)
        self.run_id, self.total, self.enabled = run_id, total_assets, enabled
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)

    def run(self) -> None:
        import dagster as dg

        instance = dg.DagsterInstance.get()
        wanted = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS,
                  dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.ASSET_MATERIALIZATION,
                  dg.DagsterEventType.ASSET_CHECK_EVALUATION}
        cursor, started, done = None, {}, 0
        per_step: dict[str, list[int]] = {}  # step -> [assets, checks passed, checks failed]
        status = console.status("starting the run", spinner="dots") if self.enabled else None
        if status:
            status.start()
        try:
            while True:
                stopping = self._stop_event.is_set()
                conn = instance.get_records_for_run(self.run_id, cursor=cursor, of_type=wanted)
                cursor = conn.cursor
                for record in conn.records:
                    entry = record.event_log_entry
                    event = entry.dagster_event
                    step = event.step_key or ""
                    counts = per_step.setdefault(step, [0, 0, 0])
                    kind = event.event_type
                    if kind == dg.DagsterEventType.STEP_START:
                        started[step] = entry.timestamp
                    elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
                        done += 1
                        counts[0] += 1
                        if status:
                            key = event.asset_key.to_user_string()
                            status.update(f"{done}/{self.total} assets: {key} ({step})")
                    elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                        evaluation = event.event_specific_data
                        counts[1 if evaluation.passed else 2] += 1
                        if not evaluation.passed:
                            console.print(f"  [yellow]check failed[/]: "
                                          f"{evaluation.asset_key.to_user_string()}:"
                                          f"{evaluation.check_name}")
                    else:
                        seconds = entry.timestamp - started.get(step, entry.timestamp)
                        ok = kind == dg.DagsterEventType.STEP_SUCCESS
                        mark = "[green]ok[/]" if ok else "[red]FAILED[/]"
                        checks = (f", checks {counts[1]} passed" if counts[1] or counts[2]
                                  else "") + (f", {counts[2]} failed" if counts[2] else "")
                        assets = f"{counts[0]} assets" if counts[0] else "no asset"
                        console.print(f"  {mark} {step}: {assets}{checks} ({seconds:.1f} s)")
                if stopping:
                    return
                self._stop_event.wait(0.5)
        finally:
            if status:
                status.stop()
            instance.dispose()


def _read_run(instance, run_id: str, summary: DemoSummary) -> None:
    """Model quality and counts from the run's event log in Dagster's storage."""
    import dagster as dg

    from dagster_project.models import CHAMPION_CHECK, MODELS

    by_key = {spec.key: spec for spec in MODELS}
    records = instance.get_records_for_run(run_id, of_type={
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ASSET_CHECK_EVALUATION}).records
    materialised: dict[dg.AssetKey, dict[str, Any]] = {}
    checks: dict[dg.AssetKey, Any] = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            m = event.event_specific_data.materialization
            materialised[m.asset_key] = {k: v.value for k, v in m.metadata.items()}
        else:
            evaluation = event.event_specific_data
            name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            if evaluation.passed:
                summary.checks_passed += 1
            else:
                summary.checks_failed.append(name)
            if evaluation.check_name == CHAMPION_CHECK:
                checks[evaluation.asset_key] = evaluation
    summary.assets_materialised = len(materialised)
    for key, spec in by_key.items():
        evaluation, meta = checks.get(key), materialised.get(key, {})
        if evaluation is None:
            continue
        values = {k: v.value for k, v in evaluation.metadata.items()}
        summary.models.append(ModelQuality(
            model=spec.model, score=spec.score_key,
            champion=_number(values.get("champion")), baseline=_number(values.get("baseline")),
            passed=evaluation.passed, version=str(meta.get("champion_version", "")),
            promoted=bool(meta.get("promoted", False))))


def _number(value: Any) -> float | None:
    return None if value is None or value != value else float(value)  # NaN = no figure


# -- 4. the summary ---------------------------------------------------------------------------

def _has_campaign_assets() -> bool:
    from dagster_project.definitions import defs

    graph = defs.resolve_asset_graph()
    return any(k.path[0] in ("push", "campaigns") or graph.get(k).group_name == "campaigns"
               for k in graph.get_all_asset_keys())


def read_summary(database_url: str, summary: DemoSummary) -> None:
    with psycopg.connect(database_url) as conn:
        accepted = dict(conn.execute(
            "SELECT source, count(*) FROM raw.events GROUP BY 1").fetchall())
        rejected = dict(conn.execute(
            "SELECT source, count(*) FROM raw.rejected_events GROUP BY 1").fetchall())
        summary.events_by_source = {s: (accepted.get(s, 0), rejected.get(s, 0))
                                    for s in sorted(set(accepted) | set(rejected))}
        summary.people, summary.authorised = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE auth_status) FROM crm.users").fetchone()
        summary.devices = conn.execute("SELECT count(*) FROM crm.client_ids").fetchone()[0]
        summary.segments = {(by, seg): n for by, seg, n in conn.execute(
            "SELECT assigned_by, segment, count(*) FROM ml.user_segments "
            "GROUP BY 1, 2 ORDER BY 1, 3 DESC").fetchall()}
        row = conn.execute(
            "SELECT count(*), avg(p_active), count(*) FILTER (WHERE p_active < 0.5), "
            "sum(expected_orders_90d), sum(expected_value_12m) FROM ml.user_lifecycle"
        ).fetchone()
        summary.lifecycle = dict(zip(
            ("buyers", "mean_p_active", "likely_lapsed", "expected_orders_90d",
             "expected_value_12m"), (float(v or 0) for v in row), strict=True))
        has_ledger = conn.execute("SELECT to_regclass('push.deliveries')").fetchone()[0]
        if has_ledger and _has_campaign_assets():
            summary.pushes = read_deliveries(conn)


def show_pushes(pushes: Deliveries, setup: PushSetup | None) -> None:
    total = totals(pushes)
    console.print("pushes sent (push.deliveries): " + ", ".join(
        f"{status} {total.get(status, 0):,}" for status in ("sent", "failed", "skipped"))
        + f"; planned {total.get('planned', 0):,} (due later, in each person's send window)")
    table = Table("provider", "status", "reason", "rows", title="push.deliveries")
    for (channel, status, reason), n in pushes.items():
        table.add_row(channel or "(no device)", status, reason or "-", f"{n:,}")
    console.print(table)
    if setup is not None:
        console.print(f"push services: {setup.describe()}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def show_summary(s: DemoSummary) -> None:
    console.rule("summary")
    events = Table("source", "events stored", "rejected", title="raw.events")
    for source, (ok, bad) in s.events_by_source.items():
        events.add_row(source, f"{ok:,}", f"{bad:,}")
    console.print(events)
    console.print(f"identity graph: {s.people:,} people in crm.users ({s.authorised:,} with "
                  f"an account), {s.devices:,} devices in crm.client_ids")
    segments = Table("assigned by", "segment", "people", title="ml.user_segments")
    for (by, seg), n in s.segments.items():
        segments.add_row(by, seg, f"{n:,}")
    console.print(segments)
    lc = s.lifecycle
    console.print(
        f"lifecycle (ml.user_lifecycle): {lc['buyers']:,.0f} buyers, mean chance of being "
        f"active {lc['mean_p_active']:.2f}, {lc['likely_lapsed']:,.0f} likely lapsed "
        f"(below 0.5); {lc['expected_orders_90d']:,.0f} orders expected in 90 days, "
        f"{lc['expected_value_12m']:,.0f} expected 12-month value")
    quality = Table("model", "holdout score", "champion", "baseline", "beats baseline",
                    "version", title="models (the champion check of this Dagster run)")
    names = {"recs": "recommendations (baseline: popularity)",
             "send-time": "send time (baseline: one hour for all)",
             "lifecycle": "lifecycle (baseline: own past rate)",
             "segments": "segments (baseline: random groups)"}
    for q in s.models:
        quality.add_row(names.get(q.model, q.model), q.score, _fmt(q.champion),
                        _fmt(q.baseline), "yes" if q.passed else "[yellow]no[/]",
                        f"v{q.version}" + (" (new)" if q.promoted else ""))
    console.print(quality)
    if s.pushes is not None:
        show_pushes(s.pushes, s.push_setup)
    checks = f"{s.checks_passed} checks passed" + (
        f", failed: {', '.join(s.checks_failed)}" if s.checks_failed else "")
    console.print(f"Dagster run {s.run_id}: {s.run_status}, {s.assets_materialised} assets "
                  f"materialised, {checks}")
    if s.reused:
        console.print("reused from an earlier run:\n" + "\n".join(f"  - {r}" for r in s.reused))
    console.print("\nopen the control room:  .venv/bin/crm ui         (Dagster, "
                  "http://127.0.0.1:3000)\nopen the model runs:    .venv/bin/crm mlflow-ui  "
                  "(MLflow, http://127.0.0.1:5000)")
