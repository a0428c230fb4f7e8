"""Resources shared by the domains, configured from environment variables with local defaults.

- `CrmDatabase`: `CRM_DATABASE_URL`, else the embedded server in the project's data folder
  (started on demand), exactly as every `crm` command chooses it (crm/settings.py).
- `MlflowTracking`: `MLFLOW_TRACKING_URI` (default: the SQLite store in the data folder, as
  `crm train` uses) and `CRM_MLFLOW_UI_URL` for links from asset pages (default
  http://127.0.0.1:5000, where `crm mlflow-ui` listens).
"""


import os
from typing import Any

import dagster as dg
import psycopg


class CrmDatabase(dg.ConfigurableResource):
    """The CRM database. Empty `url` means: the same choice as every `crm` command."""

    url: str = ""

    def resolved_url(self) -> str:
        if self.url:
            return self.url
        from crm.settings import database_url

        return database_url()

    def query(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple]:
        with psycopg.connect(self.resolved_url()) as conn:
            return conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: tuple[Any, ...] | None = None) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None


class MlflowTracking(dg.ConfigurableResource):
    """Where training runs are logged, and where people open them."""

    tracking_uri: str = ""
    ui_url: str = "http://127.0.0.1:5000"

    def apply(self) -> None:
        """ml/ reads MLFLOW_TRACKING_URI: a configured store is handed to it that way."""
        if self.tracking_uri:
            os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def crm_database() -> CrmDatabase:
    # Resolved when a run starts (crm/settings.py reads CRM_DATABASE_URL then), so the UI, the
    # daemon's runs and the tests all follow the environment of the process that runs.
    return CrmDatabase()


def mlflow_tracking() -> MlflowTracking:
    return MlflowTracking(
        ui_url=os.environ.get("CRM_MLFLOW_UI_URL", "http://127.0.0.1:5000"),
    )
