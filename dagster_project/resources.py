"""Resources shared by the domains, configured from environment variables with local defaults.

- `CrmDatabase`: `CRM_DATABASE_URL`, else the embedded server in the project's data folder
  (started on demand), exactly as every `crm` command chooses it (crm/settings.py).
- `MlflowTracking`: `MLFLOW_TRACKING_URI` (default: the SQLite store in the data folder, as
  `crm train` uses) and `CRM_MLFLOW_UI_URL` for links from asset pages (default
  http://127.0.0.1:5000, where `crm mlflow-ui` listens).
- `PushServices`: the FCM and APNs senders of the campaign assets, from the settings that are
  the senders' contract (CRM_FCM_CREDENTIALS, CRM_FCM_URL, CRM_APNS_KEY, CRM_APNS_KEY_ID,
  CRM_APNS_TEAM_ID, CRM_APNS_TOPIC, CRM_APNS_URL, CRM_APNS_CA_FILE); production defaults
  point at Google and Apple, `crm fake-push` prints the settings of the local test servers.
"""


import json
import os
from pathlib import Path
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


# resource field -> the environment variable it defaults to
PUSH_SETTINGS = {
    "fcm_credentials": "CRM_FCM_CREDENTIALS", "fcm_url": "CRM_FCM_URL",
    "apns_key": "CRM_APNS_KEY", "apns_key_id": "CRM_APNS_KEY_ID",
    "apns_team_id": "CRM_APNS_TEAM_ID", "apns_topic": "CRM_APNS_TOPIC",
    "apns_url": "CRM_APNS_URL", "apns_ca_file": "CRM_APNS_CA_FILE",
}
FCM_DEFAULT_URL = "https://fcm.googleapis.com"


class PushServices(dg.ConfigurableResource):
    """The push senders. An empty field reads its CRM_FCM_* / CRM_APNS_* variable in the
    process that runs (the UI's run, the daemon's, a test's); a channel without credentials
    has no sender, and its rows fail with the reason 'no_sender:<channel>'."""

    fcm_credentials: str = ""
    fcm_url: str = ""
    apns_key: str = ""
    apns_key_id: str = ""
    apns_team_id: str = ""
    apns_topic: str = ""
    apns_url: str = ""
    apns_ca_file: str = ""

    def setting(self, field: str) -> str:
        return getattr(self, field) or os.environ.get(PUSH_SETTINGS[field], "")

    def channels(self) -> list[str]:
        """The channels with credentials configured."""
        return [c for c, f in (("fcm", "fcm_credentials"), ("apns", "apns_key"))
                if self.setting(f)]

    def senders(self) -> dict[str, Any]:
        """'fcm' / 'apns' -> a sender of push/, for the channels configured."""
        out: dict[str, Any] = {}
        if creds := self.setting("fcm_credentials"):
            from push.fcm import FcmSender

            path = Path(creds)
            if not path.is_file():
                raise dg.Failure(f"CRM_FCM_CREDENTIALS {creds}: no such file")
            out["fcm"] = FcmSender(json.loads(path.read_text()),
                                   self.setting("fcm_url") or FCM_DEFAULT_URL)
        if key := self.setting("apns_key"):
            from push.apns import DEFAULT_URL, ApnsConfigError, ApnsSender, load_key

            ca = self.setting("apns_ca_file") or None
            try:
                if ca and not Path(ca).is_file():
                    raise ApnsConfigError(f"CRM_APNS_CA_FILE {ca}: no such file")
                out["apns"] = ApnsSender(
                    load_key(key), self.setting("apns_key_id"), self.setting("apns_team_id"),
                    self.setting("apns_topic"), self.setting("apns_url") or DEFAULT_URL, ca)
            except ApnsConfigError as exc:
                raise dg.Failure(str(exc)) from None
        return out


def push_services() -> PushServices:
    # Resolved when a run starts, as crm_database is: the environment of the running process.
    return PushServices()


def crm_database() -> CrmDatabase:
    # Resolved when a run starts (crm/settings.py reads CRM_DATABASE_URL then), so the UI, the
    # daemon's runs and the tests all follow the environment of the process that runs.
    return CrmDatabase()


def mlflow_tracking() -> MlflowTracking:
    return MlflowTracking(
        ui_url=os.environ.get("CRM_MLFLOW_UI_URL", "http://127.0.0.1:5000"),
    )
