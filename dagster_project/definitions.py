"""The code location: one Definitions per domain, merged. A new domain is one more module with
a `defs` and one more line in DOMAINS; resources shared by all live here."""

from __future__ import annotations

import dagster as dg

from dagster_project import campaigns, dbt, ingestion, models
from dagster_project.resources import crm_database, mlflow_tracking, push_services

DOMAINS: list[dg.Definitions] = [
    ingestion.defs,
    dbt.defs,
    models.defs,
    campaigns.defs,
]

# Nightly: everything, in dependency order (ingestion report, dbt, models, the scheduled
# campaigns), except the campaigns sent by their sensors (the abandoned-cart reminder).
NIGHTLY_SELECTION = dg.AssetSelection.all() - campaigns.NOT_NIGHTLY
nightly_job = dg.define_asset_job(
    "nightly_whole_graph", selection=NIGHTLY_SELECTION,
    description="The whole graph: ingestion health, the dbt build, the models, the nightly "
    "campaigns.",
)
nightly_schedule = dg.ScheduleDefinition(
    name="nightly_whole_graph", job=nightly_job, cron_schedule="0 3 * * *",
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
)

shared = dg.Definitions(
    jobs=[nightly_job],
    schedules=[nightly_schedule],
    resources={"crm_db": crm_database(), "mlflow": mlflow_tracking(), "push": push_services()},
)

defs = dg.Definitions.merge(*DOMAINS, shared)
