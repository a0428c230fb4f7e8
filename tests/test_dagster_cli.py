"""Dagster's own command-line tools on a fresh clone of the repository, as a data engineer or
an analyst meets the project: no dbt/target in the clone (the manifest is prepared when the
code location loads), the venv of this checkout, nothing else prepared.

- `dagster asset list` lists every dbt model of the clone and the model assets
  (`dagster asset list` has no `-w`; it loads the module workspace.yaml names);
- `dagster-graphql -w workspace.yaml` lists the asset checks: every dbt test attached to a
  model, and the checks written in Python;
- an analyst's new model appears after a reload, with no Python change; a model with broken
  SQL fails its run with dbt's own error text, and a failing dbt test is a failed asset check
  carrying dbt's message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from tests.dagster_shop import dagster_env  # noqa: F401

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODULE = ["-m", "dagster_project.definitions", "-a", "defs"]
# Checks written in Python (dagster_project/ingestion.py, models.py), by asset.
PYTHON_CHECKS = {
    "ingestion/raw_events_health": {"raw_events_fresh", "rejected_share_last_hour",
                                    "partitions_ahead"},
    "ml/user_lifecycle": {"champion_beats_baseline"},
    "ml/user_segments": {"champion_beats_baseline", "everyone_has_a_segment"},
    "ml/user_recommendations": {"champion_beats_baseline", "no_bought_products_recommended"},
    "ml/user_send_windows": {"champion_beats_baseline"},
}
CHECKS_QUERY = """{ assetNodes { assetKey { path }
  assetChecksOrError { ... on AssetChecks { checks { name } } } } }"""


def clone(dest: Path) -> Path:
    """A fresh clone of HEAD: only what is committed, no dbt/target, no .crm."""
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True)
    assert not (dest / "dbt" / "target").exists()
    return dest


def _env() -> dict[str, str]:
    # The clone's own dbt/target and logs (the suite moves them for in-process dbt runs);
    # the venv's bin/ first on PATH, as after activating it.
    env = {k: v for k, v in os.environ.items()
           if k not in ("CRM_DBT_TARGET_PATH", "CRM_DBT_LOG_PATH")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DAGSTER_DISABLE_TELEMETRY"] = "1"
    return env


def run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def asset_list(cwd: Path) -> set[str]:
    out = run(cwd, "dagster", "asset", "list", *MODULE).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def listed_checks(cwd: Path, tmp: Path) -> dict[str, set[str]]:
    answer = tmp / "checks.json"
    run(cwd, "dagster-graphql", "-w", "workspace.yaml", "--ephemeral-instance",
        "-t", CHECKS_QUERY, "-o", str(answer))
    data = json.loads(answer.read_text())
    assert "errors" not in data, data["errors"]
    return {"/".join(n["assetKey"]["path"]): {c["name"] for c in n["assetChecksOrError"]
                                              .get("checks", [])}
            for n in data["data"]["assetNodes"]}


def dbt_nodes(project: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    """From the clone's manifest: asset key of each model and seed, and the tests attached
    to each (what the Dagster translator makes of them)."""
    manifest = json.loads((project / "dbt" / "target" / "manifest.json").read_text())
    keys = {uid: f"{n['schema']}/{n['name']}" for uid, n in manifest["nodes"].items()
            if n["resource_type"] in ("model", "seed")}
    tests: dict[str, set[str]] = {}
    for node in manifest["nodes"].values():
        if node["resource_type"] != "test":
            continue
        attached = node.get("attached_node") or (
            node["depends_on"]["nodes"][0] if len(node["depends_on"]["nodes"]) == 1 else None)
        if attached in keys:
            tests.setdefault(keys[attached], set()).add(node["name"])
    return keys, tests


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clone(tmp_path_factory.mktemp("fresh") / "repo")


def test_asset_list_from_a_fresh_clone_shows_the_dbt_models_and_the_model_assets(
        fresh: Path):
    listed = asset_list(fresh)
    # The manifest was prepared while the code location loaded.
    assert (fresh / "dbt" / "target" / "manifest.json").exists()
    keys, _ = dbt_nodes(fresh)
    sql_files = {p.stem for p in (fresh / "dbt" / "models").rglob("*.sql")}
    assert sql_files <= {k.split("/")[-1] for k in keys.values()}
    assert set(keys.values()) <= listed, set(keys.values()) - listed
    assert {"crm/users", "crm/client_ids", "crm/push_tokens", "staging/stg_events",
            "enrich/geo_timezones", "ingestion/raw_events_health", "ml/user_lifecycle",
            "ml/user_segments", "ml/user_recommendations", "ml/user_send_windows"} <= listed


def test_graphql_on_workspace_yaml_lists_every_check(fresh: Path, tmp_path: Path):
    checks = listed_checks(fresh, tmp_path)
    _, dbt_tests = dbt_nodes(fresh)
    assert sum(map(len, dbt_tests.values())) > 20  # the project's tests, not a handful
    for asset, names in {**dbt_tests, **PYTHON_CHECKS}.items():
        assert names <= checks.get(asset, set()), (asset, names - checks.get(asset, set()))
    assert "unique_users_user_id" in checks["crm/users"]


BROKEN_MODEL = "select order_id, from {{ ref('purchase_history') }} where\n"
# A singular test on the seed: fails whenever the blocklist has rows (it always has).
FAILING_TEST = "select * from {{ ref('identifier_blocklist') }}\n"


@pytest.fixture(scope="module")
def analyst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clone whose code location has loaded once, then an analyst's new files in dbt/."""
    repo = clone(tmp_path_factory.mktemp("analyst") / "repo")
    asset_list(repo)  # loaded before the change: its manifest must be prepared again
    (repo / "dbt" / "models" / "marts" / "broken_orders.sql").write_text(BROKEN_MODEL)
    (repo / "dbt" / "tests" / "blocklist_must_be_empty.sql").write_text(FAILING_TEST)
    yield repo
    shutil.rmtree(repo, ignore_errors=True)


def test_a_new_model_appears_after_a_reload_with_no_python_change(analyst: Path):
    listed = asset_list(analyst)
    assert "crm/broken_orders" in listed
    _, tests = dbt_nodes(analyst)
    assert "blocklist_must_be_empty" in tests["staging/identifier_blocklist"]


def _last_run(instance: dg.DagsterInstance, before: set[str]) -> dg.DagsterRun:
    runs = [r for r in instance.get_runs() if r.run_id not in before]
    assert len(runs) == 1, [r.run_id for r in runs]
    return runs[0]


def _materialise(repo: Path, selection: str) -> tuple[subprocess.CompletedProcess[str],
                                                      dg.DagsterRun]:
    instance = dg.DagsterInstance.get()
    before = {r.run_id for r in instance.get_runs()}
    done = run(repo, "dagster", "asset", "materialize", *MODULE, "--select", selection,
               check=False)
    return done, _last_run(instance, before)


@pytest.mark.usefixtures("dagster_env")
def test_broken_sql_fails_the_run_with_dbts_own_error(analyst: Path):
    done, run_ = _materialise(analyst, "crm/broken_orders")
    assert done.returncode != 0
    instance = dg.DagsterInstance.get()
    assert run_.status == dg.DagsterRunStatus.FAILURE
    [failure] = instance.all_logs(run_.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    message = failure.dagster_event.event_specific_data.error.message
    # dbt's own words: which model, and what the database said about its SQL.
    assert "Database Error in model broken_orders" in message, message
    assert "syntax error" in message, message


@pytest.mark.usefixtures("dagster_env")
def test_failing_dbt_test_is_a_failed_check_with_dbts_message(analyst: Path):
    done, run_ = _materialise(analyst, "staging/identifier_blocklist")
    instance = dg.DagsterInstance.get()
    evaluations = {
        e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data
        for e in instance.all_logs(run_.run_id,
                                   of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)}
    failed = evaluations["blocklist_must_be_empty"]
    assert not failed.passed
    assert failed.asset_key == dg.AssetKey(["staging", "identifier_blocklist"])
    rows = len((analyst / "dbt" / "seeds" / "identifier_blocklist.csv")
               .read_text().strip().splitlines()) - 1
    # dbt's message for a failed test, shown on the check in the UI.
    assert failed.description and f"Got {rows} result" in failed.description, failed
    assert failed.metadata["dagster_dbt/failed_row_count"].value == rows
    # The seed's other tests still pass, and the run reports the failure.
    assert all(e.passed for name, e in evaluations.items() if name != "blocklist_must_be_empty")
    assert run_.status == dg.DagsterRunStatus.FAILURE and done.returncode != 0
