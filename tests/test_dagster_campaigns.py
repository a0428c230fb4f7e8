"""The campaign assets, their checks and their sensors on real parts: a simulated shop built by
dbt and trained (LightFM included), the project's Definitions executed in-process on the
PostgreSQL Dagster instance, and the local fake FCM and APNs servers, reached through the
CRM_FCM_* / CRM_APNS_* settings the push resource reads."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from crm.transform import transform
from ml.train import train
from push.fake_servers import FakePush
from push.run import deliver_due
from tests.dagster_shop import dagster_env, fake_push, fill_shop  # noqa: F401
from tests.warehouse import insert_raw_event

pytestmark = [pytest.mark.slow]

NIGHTLY = dg.AssetKey(["campaigns", "nightly_recommendations"])
CART = dg.AssetKey(["campaigns", "abandoned_cart"])


def _k(path: str) -> dg.AssetKey:
    return dg.AssetKey(path.split("/"))


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from dagster_project.definitions import defs

    return defs


# --- the graph: no database needed --------------------------------------------------------


def test_each_campaign_reads_exactly_its_tables(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    common = {"crm/users", "crm/push_tokens", "crm/user_id_history", "crm/client_ids",
              "raw/events", "ml/user_send_windows"}
    # Active buyers (lifecycle) with their top recommended product's name and price.
    assert {k.to_user_string() for k in graph.get(NIGHTLY).parent_keys} == common | {
        "ml/user_lifecycle", "ml/user_recommendations", "crm/dim_products"}
    # The reminder: people from raw events, a fixed text (no product field).
    assert {k.to_user_string() for k in graph.get(CART).parent_keys} == common
    for key in (NIGHTLY, CART):
        assert defs.resolve_assets_def(key).specs_by_key[key].group_name == "campaigns"
        assert {c.name for c in graph.get_check_keys_for_assets([key])} == {
            "one_row_per_person_and_run", "within_frequency_caps"}
    # Every key it depends on is a real asset of the graph (a typo would be a dangling key).
    assert all(graph.has(k) for k in graph.get(NIGHTLY).parent_keys)


def _targets(defs: dg.Definitions, sensor: dg.SensorDefinition) -> set[dg.AssetKey]:
    return set(defs.resolve_job_def(sensor.job_name).asset_layer.selected_asset_keys)


def test_the_nightly_job_sends_the_scheduled_campaign_not_the_reminder(
        defs: dg.Definitions) -> None:
    job = defs.resolve_job_def("nightly_whole_graph")
    selected = set(job.asset_layer.selected_asset_keys)
    assert NIGHTLY in selected and CART not in selected
    # Downstream of the models it reads: the job builds them first.
    assert {_k("ml/user_lifecycle"), _k("ml/user_recommendations")} <= selected
    cart_sensor = defs.resolve_sensor_def("abandoned_cart_reminders")
    assert cart_sensor.minimum_interval_seconds == 300
    assert cart_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert _targets(defs, cart_sensor) == {CART}
    on_change = defs.resolve_sensor_def("nightly_recommendations_on_change")
    assert _targets(defs, on_change) == {NIGHTLY}


# --- a trained shop -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop(database_url: str, dagster_env: Path,  # noqa: F811
         fake_push: FakePush) -> str:  # noqa: F811
    """300 simulated visitors for a month through the collector's validation, dbt and
    `crm train`; an empty ledger."""
    fill_shop(database_url, visitors=300)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE push.deliveries, push.token_invalidations, push.opt_outs")
    transform(full_refresh=True, database_url=database_url)
    train(database_url, seed=7)
    return database_url


def _materialise(defs: dg.Definitions, key: dg.AssetKey, config: dict | None = None,
                 tags: dict | None = None) -> dg.ExecuteInJobResult:
    job = defs.resolve_implicit_global_asset_job_def()
    run_config = {"ops": {"__".join(key.path): {"config": config}}} if config else {}
    return job.execute_in_process(instance=dg.DagsterInstance.get(), asset_selection=[key],
                                  run_config=run_config, tags=tags, raise_on_error=False)


def _metadata(result: dg.ExecuteInJobResult, key: dg.AssetKey) -> dict:
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _checks(result: dg.ExecuteInJobResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_materialising_the_nightly_campaign_sends_to_the_fake_services(
        shop: str, defs: dg.Definitions, fake_push: FakePush) -> None:  # noqa: F811
    midnight = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=30, microsecond=0)
    first = _materialise(defs, NIGHTLY, {"now": midnight.isoformat()})
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    meta = _metadata(first, NIGHTLY)
    assert meta["run_id"] == midnight.strftime("%Y-%m-%d")
    assert meta["audience"] > 0 and meta["reachable"] > 0, meta
    assert meta["channels_configured"] == "apns, fcm"
    assert "Picked for you:" in meta["sample_message"]
    assert _checks(first) == {"one_row_per_person_and_run": True, "within_frequency_caps": True}
    # The rest of the day: every best window has come, what waited goes out.
    rest = _materialise(defs, NIGHTLY, {"now": (midnight + dt.timedelta(hours=23, minutes=59))
                                        .isoformat(), "run_id": meta["run_id"]})
    assert rest.success
    later = _metadata(rest, NIGHTLY)
    assert later["planned_new"] == 0  # the same run: nothing planned twice
    with psycopg.connect(shop) as conn:
        sent = [r[0] for r in conn.execute(
            "SELECT delivery_id::text FROM push.deliveries "
            "WHERE campaign = 'nightly_recommendations' AND status = 'sent'")]
        statuses = dict(conn.execute(
            "SELECT status, count(*) FROM push.deliveries "
            "WHERE campaign = 'nightly_recommendations' GROUP BY 1").fetchall())
    assert sent and meta["sent"] + later["sent"] == len(sent)
    assert statuses.get("planned", 0) == 0, statuses
    # Each sent row reached a fake service exactly once, carrying its delivery id.
    received = [d for d in fake_push.delivery_ids() if d in set(sent)]
    assert sorted(received) == sorted(sent)
    assert _checks(rest) == {"one_row_per_person_and_run": True, "within_frequency_caps": True}


def _run_checks(defs: dg.Definitions, key: dg.AssetKey) -> dict[str, bool]:
    job = dg.define_asset_job("campaign_checks", selection=dg.AssetSelection.checks_for_assets(
        key)).resolve(asset_graph=defs.resolve_asset_graph(), resource_defs=defs.resources)
    result = job.execute_in_process(instance=dg.DagsterInstance.get())
    return _checks(result)


def test_the_checks_fail_on_a_ledger_that_breaks_the_rules(
        shop: str, defs: dg.Definitions) -> None:
    with psycopg.connect(shop, autocommit=True) as conn:
        if not conn.execute("SELECT count(*) FROM push.deliveries WHERE campaign = "
                            "'nightly_recommendations' AND status = 'sent'").fetchone()[0]:
            # run alone: send a day of the campaign first (its windows, then the day's end)
            midnight = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=30,
                                                       microsecond=0)
            for at in (midnight, midnight + dt.timedelta(hours=23, minutes=59)):
                assert _materialise(defs, NIGHTLY, {
                    "now": at.isoformat(), "run_id": midnight.strftime("%Y-%m-%d")}).success
        person, run_id, at = conn.execute(
            "SELECT person_id, run_id, coalesce(finished_at, send_at) FROM push.deliveries "
            "WHERE campaign = 'nightly_recommendations' AND status = 'sent' "
            "ORDER BY planned_at DESC LIMIT 1").fetchone()
        assert _run_checks(defs, NIGHTLY) == {"one_row_per_person_and_run": True,
                                              "within_frequency_caps": True}
        # Another campaign pushed the same person an hour before: over 1 a day.
        conn.execute(
            "INSERT INTO push.deliveries (campaign, run_id, person_id, send_at, expires_at,"
            " status, finished_at) VALUES ('other_test', 'r', %s, %s, %s, 'sent', %s)",
            (person, at - dt.timedelta(hours=1), at, at - dt.timedelta(hours=1)))
        assert _run_checks(defs, NIGHTLY)["within_frequency_caps"] is False
        conn.execute("DELETE FROM push.deliveries WHERE campaign = 'other_test'")
        # A second device row for a campaign that pushes one device per person.
        conn.execute(
            "INSERT INTO push.deliveries (campaign, run_id, person_id, device, send_at,"
            " expires_at, status, reason) VALUES ('nightly_recommendations', %s, %s, 1, %s, %s,"
            " 'skipped', 'cap_day')", (run_id, person, at, at))
        assert _run_checks(defs, NIGHTLY)["one_row_per_person_and_run"] is False
        conn.execute("DELETE FROM push.deliveries WHERE campaign = 'nightly_recommendations'"
                     " AND device = 1")
        assert _run_checks(defs, NIGHTLY) == {"one_row_per_person_and_run": True,
                                              "within_frequency_caps": True}


# --- sensors ------------------------------------------------------------------------------


def _evaluate(sensor: dg.SensorDefinition, defs: dg.Definitions, cursor: str | None
              ) -> tuple[list[dg.RunRequest], str | None, str | None]:
    context = dg.build_sensor_context(instance=dg.DagsterInstance.get(), cursor=cursor,
                                      resources=dict(defs.resources or {}))
    data = sensor.evaluate_tick(context)
    return list(data.run_requests or []), data.cursor or cursor, data.skip_message


def test_the_change_sensor_runs_the_campaign_when_its_audience_or_file_changes(
        shop: str, defs: dg.Definitions, tmp_path: Path) -> None:
    from dagster_project.campaigns import CAMPAIGNS, _change_sensor

    instance = dg.DagsterInstance.get()
    # The sensor of the shipped campaign, on a copy of its file this test may edit.
    [(path, campaign)] = [(p, c) for p, c in CAMPAIGNS if c.name == "nightly_recommendations"]
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    sensor = _change_sensor(copy, campaign)
    requests, cursor, skip = _evaluate(sensor, defs, None)
    assert not requests and cursor and "baseline" in (skip or "")
    requests, cursor, skip = _evaluate(sensor, defs, cursor)
    assert not requests and "neither" in (skip or "")  # nothing changed
    # The lifecycle model is re-materialised: the campaign's audience is new.
    instance.report_runless_asset_event(dg.AssetMaterialization(_k("ml/user_lifecycle")))
    requests, cursor, skip = _evaluate(sensor, defs, cursor)
    assert len(requests) == 1, (skip, cursor)
    [request] = requests
    assert request.asset_selection == [NIGHTLY] and request.tags["crm/trigger"] == "audience"
    requests, cursor, _ = _evaluate(sensor, defs, cursor)
    assert not requests  # asked once
    # A tables-only refresh (the hourly dbt build) is not a new audience.
    instance.report_runless_asset_event(dg.AssetMaterialization(_k("crm/push_tokens")))
    assert not _evaluate(sensor, defs, cursor)[0]
    # Re-materialised again, but the campaign ran after it (the nightly job): no run.
    old_cursor = cursor
    instance.report_runless_asset_event(dg.AssetMaterialization(_k("ml/user_lifecycle")))
    instance.report_runless_asset_event(dg.AssetMaterialization(NIGHTLY))
    assert not _evaluate(sensor, defs, old_cursor)[0]
    # The file changes: a run; an invalid edit: no run, the problem named, and once fixed a run.
    copy.write_text(copy.read_text().replace("expiry_hours: 24", "expiry_hours: 20"))
    requests, cursor, _ = _evaluate(sensor, defs, old_cursor)
    [request] = requests
    assert request.tags["crm/trigger"] == "file"
    assert not _evaluate(sensor, defs, cursor)[0]
    copy.write_text(copy.read_text().replace("expiry_hours: 20", "expiry_hours: -1"))
    requests, cursor, skip = _evaluate(sensor, defs, cursor)
    assert not requests and "expiry_hours" in (skip or "")
    copy.write_text(copy.read_text().replace("expiry_hours: -1", "expiry_hours: 22"))
    requests, cursor, _ = _evaluate(sensor, defs, cursor)
    assert requests
    # A run that will materialise the campaign is queued (the nightly job, say) when the
    # audience changes: the sensor waits for it instead of asking for another run.
    job = defs.resolve_implicit_global_asset_job_def()
    queued = instance.create_run_for_job(job, asset_selection=frozenset({NIGHTLY}))
    instance.report_runless_asset_event(dg.AssetMaterialization(_k("ml/user_lifecycle")))
    requests, _, skip = _evaluate(sensor, defs, cursor)
    assert not requests and "in progress" in (skip or "")
    instance.report_run_canceled(queued)  # it ended without materialising the campaign
    assert _evaluate(sensor, defs, cursor)[0]


def _event(conn: psycopg.Connection, event_type: str, account: str, at: dt.datetime,
           push_token: str | None = None, **payload: object) -> None:
    insert_raw_event(conn, event_type, account, at, "android", push_token, **payload)


def test_the_abandoned_cart_sensor_reminds_once_and_not_after_an_order(
        shop: str, defs: dg.Definitions, fake_push: FakePush) -> None:  # noqa: F811
    sensor = defs.resolve_sensor_def("abandoned_cart_reminders")
    now = dt.datetime.now(dt.UTC)
    tag = uuid.uuid4().hex[:8]
    before, _, _ = _evaluate(sensor, defs, None)
    named_before = set(before[0].run_config["ops"]["campaigns__abandoned_cart"]["config"]
                       ["people"]) if before else set()
    with psycopg.connect(shop, autocommit=True) as conn:
        for who in ("left", "buyer"):
            _event(conn, "page_view", f"dg-{who}-{tag}", now - dt.timedelta(hours=3),
                   push_token=f"tok-{who}-{tag}")
            _event(conn, "checkout_start", f"dg-{who}-{tag}", now - dt.timedelta(hours=2),
                   total_price=19.9)
        transform(database_url=shop)  # crm.users maps the accounts to people
        people = dict(conn.execute(
            "SELECT external_user_id, user_id::text FROM crm.users WHERE external_user_id"
            " LIKE %s", (f"dg-%-{tag}",)).fetchall())
    left, buyer = people[f"dg-left-{tag}"], people[f"dg-buyer-{tag}"]
    assert not {left, buyer} & named_before  # no run for them before their checkouts
    [request], _, _ = _evaluate(sensor, defs, None)
    config = request.run_config["ops"]["campaigns__abandoned_cart"]["config"]
    assert {left, buyer} <= set(config["people"]) and request.asset_selection == [CART]
    # The buyer orders before the run starts: the run cancels their reminder.
    with psycopg.connect(shop, autocommit=True) as conn:
        _event(conn, "order_complete", f"dg-buyer-{tag}", now - dt.timedelta(minutes=1),
               order_id=f"o-{tag}", total_price=19.9)
    result = _materialise(defs, CART, config, tags=request.tags)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert _checks(result) == {"one_row_per_person_and_run": True,
                               "within_frequency_caps": True}
    with psycopg.connect(shop) as conn:
        rows = {p: (s, r, at) for p, s, r, at in conn.execute(
            "SELECT person_id, status, reason, send_at FROM push.deliveries"
            " WHERE campaign = 'abandoned_cart' AND person_id = ANY(%s)", ([left, buyer],))}
    assert rows[buyer][:2] == ("skipped", "purchased")
    # The reminder goes out now, or at the end of the person's quiet hours.
    assert rows[left][0] in ("sent", "planned")
    deliver_due(shop, max(now, rows[left][2]) + dt.timedelta(seconds=1))
    tokens = [m["token"] for m in fake_push.fcm.received]
    assert tokens.count(f"tok-left-{tag}") == 1 and f"tok-buyer-{tag}" not in tokens
    # The next look: neither is due again (one reminded, one bought).
    again, _, _ = _evaluate(sensor, defs, None)
    named = set(again[0].run_config["ops"]["campaigns__abandoned_cart"]["config"]["people"]
                ) if again else set()
    assert not {left, buyer} & named


def test_the_daemon_runs_the_cart_sensor_from_workspace_yaml(
        shop: str, defs: dg.Definitions) -> None:
    """The sensor as the daemon runs it: the code location of workspace.yaml in its own
    process, its resources from the environment, the request queued on the instance."""
    import logging

    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    instance = dg.DagsterInstance.get()
    now, tag = dt.datetime.now(dt.UTC), uuid.uuid4().hex[:8]
    with psycopg.connect(shop, autocommit=True) as conn:
        _event(conn, "page_view", f"dg-daemon-{tag}", now - dt.timedelta(hours=3),
               push_token=f"tok-daemon-{tag}")
        _event(conn, "checkout_start", f"dg-daemon-{tag}", now - dt.timedelta(hours=2))
        transform(database_url=shop)
        [person] = conn.execute("SELECT user_id::text FROM crm.users WHERE external_user_id"
                                " = %s", (f"dg-daemon-{tag}",)).fetchone()
    before = {r.run_id for r in instance.get_runs()}
    target = WorkspaceFileTarget(paths=[str(Path(__file__).resolve().parents[1]
                                           / "workspace.yaml")])
    with create_test_daemon_workspace_context(target, instance) as context:
        list(execute_sensor_iteration(context, logging.getLogger("sensors"), None, None))
    runs = [r for r in instance.get_runs() if r.run_id not in before
            and r.tags.get("crm/trigger") == "abandoned_cart"]
    assert len(runs) == 1, [(r.job_name, r.tags) for r in runs]
    [run] = runs
    assert run.asset_selection == {CART}
    assert person in run.run_config["ops"]["campaigns__abandoned_cart"]["config"]["people"]
    instance.report_run_canceled(run)  # leave nothing queued for other tests
