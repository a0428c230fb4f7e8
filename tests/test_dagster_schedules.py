"""The schedules of the code location: what each one selects, and what a tick produces.

The selections are resolved against the real asset graph (the dbt manifest included); the
ticks are evaluated twice: by the schedule definition itself, and by Dagster's scheduler (the
code the daemon runs each iteration) against workspace.yaml and the project's PostgreSQL
instance, where each tick must leave one queued run of the right job with the schedule's tag.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from tests.dagster_shop import dagster_env  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
NIGHTLY, HOURLY = "nightly_whole_graph", "hourly_dbt_build"
# The original's three tables that must stay fresh during the day.
HOURLY_TARGETS = {dg.AssetKey(["crm", t]) for t in ("users", "client_ids", "push_tokens")}
GEO = dg.AssetKey(["enrich", "geo_timezones"])


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from dagster_project.definitions import defs

    return defs


def _selected(defs: dg.Definitions, job: str) -> set[dg.AssetKey]:
    return set(defs.resolve_job_def(job).asset_layer.selected_asset_keys)


def _group(defs: dg.Definitions, key: dg.AssetKey) -> str:
    return defs.resolve_assets_def(key).specs_by_key[key].group_name or ""


def test_nightly_selects_every_asset_dagster_can_build(defs: dg.Definitions):
    graph = defs.resolve_asset_graph()
    buildable = {k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    # Everything but the campaigns their sensors send (tests/test_dagster_campaigns.py).
    sensor_sent = {dg.AssetKey(["campaigns", "abandoned_cart"])}
    assert _selected(defs, NIGHTLY) == buildable - sensor_sent
    # Every layer is in: ingestion health, dbt (all layers), the models, the campaigns.
    groups = {_group(defs, k) for k in _selected(defs, NIGHTLY)}
    assert {"ingestion", "dbt", "dbt_staging", "dbt_intermediate", "dbt_marts",
            "models", "campaigns"} <= groups, groups
    # The external table the collector writes is not something a run can build.
    assert dg.AssetKey(["raw", "events"]) not in _selected(defs, NIGHTLY)
    job = defs.resolve_job_def(NIGHTLY)
    assert set(job.asset_layer.asset_graph.asset_check_keys) == {
        k for k in graph.asset_check_keys if k.asset_key not in sensor_sent}


def test_hourly_selects_the_crm_tables_and_exactly_what_they_are_built_from(
        defs: dg.Definitions):
    graph = defs.resolve_asset_graph()
    selected = _selected(defs, HOURLY)
    assert HOURLY_TARGETS | {GEO} <= selected
    # Exactly the dbt upstream of the three tables (the manifest's lineage, walked here
    # independently of dbt's selector) plus the geo lookup that dbt reads.
    upstream: set[dg.AssetKey] = set()
    todo = list(HOURLY_TARGETS)
    while todo:
        key = todo.pop()
        if key in upstream:
            continue
        upstream.add(key)
        todo.extend(graph.get(key).parent_keys)
    buildable_upstream = {k for k in upstream if graph.get(k).is_materializable}
    assert selected == buildable_upstream | {GEO}
    assert GEO in upstream  # the lookup feeds the zones of crm.users
    # No model, no ingestion report, no mart the three tables do not read.
    assert not {k for k in selected if _group(defs, k) in ("models", "ingestion")}
    assert not {k for k in selected if k.path[0] == "ml"}
    assert dg.AssetKey(["crm", "fct_sessions"]) not in selected
    assert dg.AssetKey(["crm", "stg_events"]) not in selected
    assert dg.AssetKey(["staging", "stg_events"]) in selected


@pytest.mark.parametrize(("name", "job", "cron", "tick", "not_tick"), [
    (NIGHTLY, NIGHTLY, "0 3 * * *", dt.datetime(2026, 3, 29, 3, 0, tzinfo=dt.UTC),
     dt.datetime(2026, 3, 29, 4, 0, tzinfo=dt.UTC)),
    (HOURLY, HOURLY, "0 * * * *", dt.datetime(2026, 3, 29, 14, 0, tzinfo=dt.UTC),
     dt.datetime(2026, 3, 29, 14, 30, tzinfo=dt.UTC)),
])
def test_a_tick_requests_one_run_of_the_job(defs: dg.Definitions, name: str, job: str,
                                            cron: str, tick: dt.datetime,
                                            not_tick: dt.datetime):
    schedule = defs.resolve_schedule_def(name)
    assert (schedule.job_name, schedule.cron_schedule, schedule.execution_timezone) == (
        job, cron, "UTC")
    # Running from the moment the code location loads: no one has to switch it on.
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    data = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=tick))
    assert data.skip_message is None
    [request] = data.run_requests
    # No asset_selection of its own: the job's selection (checked above) is what runs.
    assert request.asset_selection is None and request.run_config == {}
    assert request.tags["dagster/schedule_name"] == name
    from dagster._utils.schedules import cron_string_iterator

    # The cron string fires at the tick time and not at the other one.

    nxt = next(cron_string_iterator(tick.timestamp() - 1, cron, "UTC"))
    assert nxt == tick
    assert next(cron_string_iterator(not_tick.timestamp() - 1, cron, "UTC")) != not_tick


@pytest.fixture
def scheduler_context(dagster_env: Path) -> Iterator[object]:  # noqa: F811
    """The daemon's view of workspace.yaml (the code location in its own gRPC server) on the
    project's PostgreSQL instance."""
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    instance = dg.DagsterInstance.get()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    target = WorkspaceFileTarget(paths=[str(ROOT / "workspace.yaml")])
    with create_test_daemon_workspace_context(target, instance) as context:
        yield context


def _iterate(context: object, now: dt.datetime) -> None:
    from dagster._core.test_utils import freeze_time
    from dagster._scheduler.scheduler import launch_scheduled_runs

    # The scheduler reads Dagster's clock: set it to the moment of this iteration.
    with freeze_time(now):
        list(launch_scheduled_runs(context, logging.getLogger("scheduler"), now, {}))


def test_the_scheduler_queues_the_runs_of_each_tick(scheduler_context: object):
    instance = dg.DagsterInstance.get()
    before = {r.run_id for r in instance.get_runs()}
    start = dt.datetime(2026, 3, 29, 2, 50, tzinfo=dt.UTC)
    _iterate(scheduler_context, start)  # first sight of the schedules: nothing due yet
    _iterate(scheduler_context, start + dt.timedelta(minutes=5))  # 02:55: no tick
    assert {r.run_id for r in instance.get_runs()} == before
    # 03:00: the hourly tick and the nightly one.
    _iterate(scheduler_context, start + dt.timedelta(minutes=10, seconds=5))
    runs = [r for r in instance.get_runs() if r.run_id not in before]
    by_schedule = {r.tags.get("dagster/schedule_name"): r for r in runs}
    assert sorted(by_schedule) == [HOURLY, NIGHTLY] and len(runs) == 2, [
        (r.job_name, r.tags) for r in runs]
    for name, run in by_schedule.items():
        assert run.job_name == name
        # Queued (the instance runs one at a time through its queue), not failed to submit.
        assert run.status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                              dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)
        # No narrower selection: the run builds the job's selection, resolved above.
        assert run.asset_selection is None and run.asset_check_selection is None
    # The same tick is not launched twice.
    _iterate(scheduler_context, start + dt.timedelta(minutes=11))
    assert len([r for r in instance.get_runs() if r.run_id not in before]) == 2
    # 04:00: the next hourly tick, no nightly one.
    _iterate(scheduler_context, start + dt.timedelta(minutes=70, seconds=5))
    new = [r for r in instance.get_runs() if r.run_id not in before]
    assert sorted(r.job_name for r in new) == [HOURLY, HOURLY, NIGHTLY]
    for run in new:  # leave no queued run behind for other tests on the instance
        instance.report_run_canceled(run)
