"""The dbt project (dbt/) as Dagster assets: one asset per model, dbt tests as asset checks.

The manifest is prepared when this module loads if it is missing or older than any file of the
project, so a fresh clone needs no manual `dbt parse`, and a model an analyst adds under
dbt/models appears in the graph after a reload of the code location, with no Python change.

dbt connects with the same settings as `crm transform` (crm/transform.py fills the variables
dbt/profiles.yml reads from the one database URL), and the geo time-zone lookup that SQL
cannot do runs first as its own asset (`enrich/geo_timezones`), as `crm transform` does.
"""


import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._utils import run_with_concurrent_update_guard
from dagster_dbt import (
    DagsterDbtTranslator,
    DbtCliInvocation,
    DbtCliResource,
    DbtProject,
    build_dbt_asset_selection,
    dbt_assets,
)
from dagster_dbt.errors import DagsterDbtCliRuntimeError

from crm.transform import DBT_DIR, dbt_connection
from dagster_project.resources import CrmDatabase

DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt"))
# Folder of dbt/models -> Dagster group (the layers an analyst knows).
LAYERS = ("staging", "intermediate", "marts")
# What the hourly build keeps fresh during the day: the original's three tables and what they
# are built from (`+` = with everything upstream).
HOURLY_DBT_SELECT = "+users +client_ids +push_tokens"


def _target_path() -> Path:
    # Tests move dbt's target/ per run (CRM_DBT_TARGET_PATH), as crm/transform.py does.
    return Path(os.environ.get("CRM_DBT_TARGET_PATH") or "target")


def _project_files(project_dir: Path) -> Iterator[Path]:
    for folder in ("models", "macros", "seeds", "tests"):
        yield from (p for p in (project_dir / folder).rglob("*") if p.is_file())
    yield project_dir / "dbt_project.yml"


def prepare_manifest(project: DbtProject) -> Path:
    """`dbt parse` when manifest.json is missing or older than any project file."""
    manifest = project.manifest_path
    if manifest.exists():
        built = manifest.stat().st_mtime
        if all(p.stat().st_mtime <= built for p in _project_files(project.project_dir)):
            return manifest
    # dbt beside this interpreter: the venv's bin/ need not be on PATH.
    run_with_concurrent_update_guard(manifest, lambda: DbtCliResource(
        project_dir=project, dbt_executable=DBT_EXECUTABLE,
    ).cli(["parse", "--quiet"], target_path=project.target_path).wait())
    return manifest


DBT_PROJECT = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR, target_path=_target_path())
prepare_manifest(DBT_PROJECT)


class CrmDbtTranslator(DagsterDbtTranslator):
    """Asset keys are the tables' own names (schema / table: `crm/users`,
    `staging/stg_events`, `raw/events`), groups are the layers."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        return dg.AssetKey([dbt_resource_props["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn") or []
        layer = next((part for part in fqn[1:2] if part in LAYERS), None)
        return f"dbt_{layer}" if layer else "dbt"


class DbtBuildConfig(dg.Config):
    full_refresh: bool = False


def dbt_vars() -> str:
    from crm.settings import shop_timezone

    return json.dumps({"shop_timezone": shop_timezone()})


@dg.asset(
    key=["enrich", "geo_timezones"], deps=[dg.AssetKey(["raw", "events"])], group_name="dbt",
    description="IANA zone of each new geo_location position (tzfpy, offline): the lookup SQL "
    "cannot do, run before dbt as `crm transform` does (crm/timezones.py).",
)
def geo_timezones(crm_db: CrmDatabase) -> dg.MaterializeResult:
    from crm.timezones import update_geo_timezones

    url = crm_db.resolved_url()
    summary = update_geo_timezones(url)
    rows = crm_db.scalar("select count(*) from enrich.geo_timezones")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows, "looked_up_now": summary.looked_up})


@dbt_assets(
    manifest=DBT_PROJECT.manifest_path, project=DBT_PROJECT,
    dagster_dbt_translator=CrmDbtTranslator(), name="crm_dbt_models",
)
def crm_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                   crm_db: CrmDatabase, config: DbtBuildConfig) -> Iterator[Any]:
    """`dbt build` of the selected models (seeds, models and their tests in DAG order); row
    counts of what was built are added to each model's materialisation."""
    args = ["build", "--vars", dbt_vars()] + (["--full-refresh"] if config.full_refresh else [])
    with dbt_connection(crm_db.resolved_url()):
        invocation = dbt.cli(args, context=context)
        yield from with_test_messages(invocation.stream().fetch_row_counts(), invocation)


def with_test_messages(events: Iterator[Any], invocation: DbtCliInvocation) -> Iterator[Any]:
    """The events of a dbt invocation, each failed test's check carrying dbt's own message
    ("Got 3 results, configured to fail if != 0") as its description.

    dbt logs that message only in its end-of-run summary (run_results.json), after the test's
    result event, so failed checks are held until dbt has finished; passing ones go at once.
    """
    held: list[dg.AssetCheckResult] = []
    error: DagsterDbtCliRuntimeError | None = None
    try:
        for event in events:
            if isinstance(event, dg.AssetCheckResult) and not event.passed:
                held.append(event)
            else:
                yield event
    except DagsterDbtCliRuntimeError as exc:  # dbt exited non-zero: report the checks first
        error = exc
    if held:
        messages = _result_messages(invocation)
        for check in held:
            unique_id = check.metadata.get("unique_id")
            message = messages.get(str(getattr(unique_id, "value", unique_id)))
            yield check._replace(description=message) if message else check
    if error is not None:
        raise error


def _result_messages(invocation: DbtCliInvocation) -> dict[str, str]:
    try:
        results = invocation.get_artifact("run_results.json")["results"]
    except (OSError, ValueError, KeyError):  # dbt died before writing it: no messages to add
        return {}
    return {r["unique_id"]: r["message"] for r in results if r.get("message")}


hourly_dbt_job = dg.define_asset_job(
    "hourly_dbt_build",
    selection=build_dbt_asset_selection([crm_dbt_models], dbt_select=HOURLY_DBT_SELECT)
    | dg.AssetSelection.assets(geo_timezones),
    description="Incremental dbt build of users, client_ids, push_tokens and what they read.",
)
hourly_dbt_schedule = dg.ScheduleDefinition(
    name="hourly_dbt_build", job=hourly_dbt_job, cron_schedule="0 * * * *",
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(
    assets=[geo_timezones, crm_dbt_models],
    jobs=[hourly_dbt_job],
    schedules=[hourly_dbt_schedule],
    resources={
        "dbt": DbtCliResource(project_dir=DBT_PROJECT, profiles_dir=str(DBT_DIR),
                              dbt_executable=DBT_EXECUTABLE),
    },
)
