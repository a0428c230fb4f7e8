"""`crm demo` end to end as a user runs it: a subprocess on a small shop in its own state
folder (embedded database, Dagster instance, MLflow store), the real data sets trimmed to
their first rows. Every figure the summary prints is checked against the database, and a
second run succeeds and says what it reused."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, SHARED_DATA
from tests.requirements import require

DATA = ("online_retail_sample.csv", "cdnow_master.txt")
ROWS = 1500  # of each real data set; the full files are the demo's default


@pytest.fixture(scope="module")
def demo_env() -> Iterator[dict[str, str]]:
    require("shared data", all((SHARED_DATA / f).is_file() for f in DATA),
            f"the demo's data sets {DATA} in {SHARED_DATA}")
    # Not under pytest's basetemp (mode 0700 there locks out the server's system user when
    # run as root; see the postgres fixture in conftest.py).
    base = Path(tempfile.mkdtemp(prefix="crm-test-demo-"))
    data = base / "data"
    data.mkdir()
    for name in DATA:
        with (SHARED_DATA / name).open() as src:
            (data / name).write_text("".join(itertools.islice(src, ROWS)))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CRM_", "DAGSTER_", "MLFLOW_"))}
    env.update(CRM_STATE_DIR=str(base / "state"), CRM_DBT_TARGET_PATH=str(base / "dbt-target"),
               COLUMNS="200")
    yield env
    subprocess.run([sys.executable, "-m", "crm", "db", "down"], env=env, cwd=ROOT,
                   capture_output=True, timeout=60)
    shutil.rmtree(base, ignore_errors=True)


def _run(env: dict[str, str], data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crm", "demo", "--visitors", "150", "--days", "5",
         "--data", str(data)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _demo(env: dict[str, str]) -> str:
    done = _run(env, Path(env["CRM_STATE_DIR"]).parent / "data")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _url(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "crm", "db", "url"], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return out.strip().splitlines()[-1]


def _n(text: str) -> int:
    return int(text.replace(",", ""))


def _rows(out: str, title: str, columns: int) -> list[list[str]]:
    """The body rows of the rich table printed under `title`."""
    table = out[out.index(title):]
    table = table[table.index("┡"):table.index("└")]
    cells = [[c.strip() for c in line.strip().strip("│").split("│")]
             for line in table.splitlines() if line.lstrip().startswith("│")]
    assert cells and all(len(row) == columns for row in cells), table
    return cells


def check_summary(out: str, conn: psycopg.Connection) -> None:
    stored = dict(conn.execute("SELECT source, count(*) FROM raw.events GROUP BY 1").fetchall())
    rejected = dict(conn.execute(
        "SELECT source, count(*) FROM raw.rejected_events GROUP BY 1").fetchall())
    printed = {s: (_n(ok), _n(bad)) for s, ok, bad in _rows(out, "raw.events", 3)}
    assert printed == {s: (stored.get(s, 0), rejected.get(s, 0))
                       for s in set(stored) | set(rejected)}
    assert {"http:demo", "import:online-retail", "import:cdnow"} <= set(printed)
    assert printed["http:demo"][1] > 0  # the simulator's invalid events were rejected

    people = _n(re.search(r"identity graph: ([\d,]+) people in crm.users", out)[1])
    assert people == conn.execute("SELECT count(*) FROM crm.users").fetchone()[0] > 0

    segments = {(by, seg): _n(n) for by, seg, n in _rows(out, "ml.user_segments", 3)}
    assert segments == {(by, seg): n for by, seg, n in conn.execute(
        "SELECT assigned_by, segment, count(*) FROM ml.user_segments GROUP BY 1, 2")}

    deliveries = {(ch or "(no device)", st, r or "-"): n for ch, st, r, n in conn.execute(
        "SELECT channel, status, reason, count(*) FROM push.deliveries GROUP BY 1, 2, 3")}
    assert {(ch, st, r): _n(n) for ch, st, r, n in _rows(out, "push.deliveries", 4)
            } == deliveries
    totals = re.search(r"pushes sent \(push.deliveries\): sent ([\d,]+), failed ([\d,]+), "
                       r"skipped ([\d,]+); planned ([\d,]+)", out)
    for status, printed_total in zip(("sent", "failed", "skipped", "planned"), totals.groups(),
                                     strict=True):
        assert _n(printed_total) == sum(n for (_, st, _), n in deliveries.items()
                                        if st == status)
    # The campaign's rows reached a sender: none failed for want of push credentials.
    assert not any(r.startswith("no_sender") for _, _, r in deliveries)
    assert "push services: local fake FCM and APNs" in out


def test_demo_summary_matches_the_database_and_a_second_run_reuses(
        demo_env: dict[str, str]) -> None:
    first = _demo(demo_env)
    log = Path(demo_env["CRM_STATE_DIR"]) / "demo.log"
    assert f"logs of dbt, MLflow and Dagster: {log}" in first.replace("\n", "")
    # dbt's chatter is in the log, not on the terminal
    assert "Completed successfully" in log.read_text()
    assert "Completed successfully" not in first
    assert re.search(r"Dagster run \S+: SUCCESS", first)
    with psycopg.connect(_url(demo_env)) as conn:
        check_summary(first, conn)
        stored = conn.execute("SELECT count(*) FROM raw.events").fetchone()[0]

    second = _demo(demo_env)
    reused = second[second.index("reused from an earlier run:"):]
    assert "deduplicated by event_id (0 new rows)" in reused
    assert "online_retail_sample.csv: all" in reused and "cdnow_master.txt: all" in reused
    assert "Dagster instance: this is run 2 of nightly_whole_graph" in reused
    assert "dbt manifest: reused" in reused
    with psycopg.connect(_url(demo_env)) as conn:
        check_summary(second, conn)
        assert conn.execute("SELECT count(*) FROM raw.events").fetchone()[0] == stored


def test_a_failing_stage_names_itself_its_cause_and_the_log(
        demo_env: dict[str, str], tmp_path: Path) -> None:
    # The user's own push settings (never used here: the run stops before the campaigns).
    mine = {"CRM_FCM_CREDENTIALS": str(tmp_path / "sa.json"), "CRM_FCM_URL": "http://x"}
    done = _run({**demo_env, **mine}, tmp_path)  # a data folder without the data sets
    assert done.returncode == 1
    assert ("push services: the services set in the environment (CRM_FCM_CREDENTIALS, "
            "CRM_FCM_URL)") in " ".join(done.stdout.split())
    log = Path(demo_env["CRM_STATE_DIR"]) / "demo.log"
    error = " ".join(done.stderr.split())
    assert f"stage imports failed: online-retail: {tmp_path / DATA[0]} not found" in error
    assert f"the full log: {log}" in error


def test_a_failed_dagster_step_is_reported_with_its_own_error() -> None:
    import dagster as dg

    from crm.demo import _failure

    @dg.op
    def needs_a_missing_name() -> None:
        from push.message import NoSuchName  # type: ignore[attr-defined]  # noqa: F401

    @dg.job
    def job() -> None:
        needs_a_missing_name()

    result = job.execute_in_process(raise_on_error=False)
    assert [_failure(e) for e in result.all_events if e.is_step_failure] == [
        "step needs_a_missing_name: ImportError: cannot import name 'NoSuchName' from "
        f"'push.message' ({ROOT / 'push' / 'message.py'})"]
