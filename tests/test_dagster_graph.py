"""The whole asset graph materialised in-process through the project's Definitions on a small
simulated shop: every asset and every check (dbt tests included) passes, and a second run is
stable."""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest

from tests.dagster_shop import dagster_env, fill_shop  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("dagster_env")]


def _run(instance: dg.DagsterInstance) -> dg.ExecuteInJobResult:
    from dagster_project.definitions import defs

    return defs.resolve_job_def("nightly_whole_graph").execute_in_process(
        instance=instance, raise_on_error=False)


def _checks(result: dg.ExecuteInJobResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e
            for e in result.get_asset_check_evaluations()}


def _counts(url: str) -> dict[str, int]:
    tables = ["crm.users", "crm.client_ids", "crm.push_tokens", "ml.user_lifecycle",
              "ml.user_segments", "ml.user_recommendations", "ml.user_send_windows"]
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"select count(*) from {t}").fetchone()[0] for t in tables}


def test_whole_graph_materialises_with_every_check_passing(database_url: str):
    from dagster_project.definitions import defs

    fill_shop(database_url, visitors=600)
    instance = dg.DagsterInstance.get()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    first = _run(instance)
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    materialised = {m.asset_key for m in first.get_asset_materialization_events()
                    for m in [m.event_specific_data.materialization]}
    expected = set(defs.resolve_job_def("nightly_whole_graph").asset_layer.selected_asset_keys)
    assert materialised == expected
    checks = _checks(first)
    expected_checks = {k for k in defs.resolve_asset_graph().asset_check_keys
                       if k.asset_key in expected}
    assert {f"{k.asset_key.to_user_string()}:{k.name}" for k in expected_checks} == set(checks)
    failed = {name: e.metadata for name, e in checks.items() if not e.passed}
    assert not failed, failed
    counts = _counts(database_url)
    assert all(counts.values()), counts

    second = _run(instance)
    assert second.success
    assert all(e.passed for e in _checks(second).values())
    assert _counts(database_url) == counts
