"""The Dagster instance of the project: DAGSTER_HOME in the data folder (crm/settings.py
state_dir, `.crm/dagster`), run, event-log and schedule storage in PostgreSQL.

The storage is its own database (`<crm database>_dagster`) on the same server as the CRM
data: the embedded server by default, or the one CRM_DATABASE_URL names. It is created on
demand, and dagster.yaml is rewritten when the server's URL changes, so the webserver, the
daemon and every CLI share one instance without SQLite locks.
"""

import os
from pathlib import Path

import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from crm.settings import database_url, state_dir


def dagster_home() -> Path:
    return Path(os.environ.get("CRM_DAGSTER_HOME") or state_dir() / "dagster").resolve()


def storage_conninfo(crm_url: str) -> str:
    """libpq conninfo of the Dagster database beside the CRM database."""
    info = conninfo_to_dict(crm_url)
    info["dbname"] = f"{info.get('dbname') or 'postgres'}_dagster"
    return make_conninfo(**info)


def sqlalchemy_url(conninfo: str) -> str:
    """postgresql+psycopg2:// URL (a plain postgresql:// picks psycopg 3 under SQLAlchemy 2.1,
    which breaks Dagster's NOTIFY); a unix-socket host goes in the query string."""
    from sqlalchemy.engine import URL

    info = conninfo_to_dict(conninfo)
    host = str(info.get("host") or "localhost")
    socket = host.startswith("/")
    query = {"host": host} if socket else {}
    if info.get("sslmode"):
        query["sslmode"] = str(info["sslmode"])
    return URL.create(
        "postgresql+psycopg2", username=info.get("user") or "postgres",
        password=info.get("password") or None, host=None if socket else host,
        port=int(info["port"]) if info.get("port") and not socket else None,
        database=info["dbname"], query=query,
    ).render_as_string(hide_password=False)


def ensure_database(conninfo: str) -> bool:
    """Create the Dagster database if the server lacks it; True if it was created."""
    info = conninfo_to_dict(conninfo)
    name = info["dbname"]
    admin = make_conninfo(**{**info, "dbname": "postgres"})
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        return True


def instance_config(storage_url: str) -> dict:
    return {
        "storage": {"postgres": {"postgres_url": storage_url}},
        "telemetry": {"enabled": False},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
            # Two cores: one run at a time, the others wait their turn in the queue.
            "config": {"max_concurrent_runs": 1},
        },
    }


def ensure_instance(crm_url: str | None = None) -> Path:
    """Prepare DAGSTER_HOME (created on demand) and point this process at it."""
    conninfo = storage_conninfo(crm_url or database_url())
    ensure_database(conninfo)
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config_file = home / "dagster.yaml"
    text = yaml.safe_dump(instance_config(sqlalchemy_url(conninfo)), sort_keys=False)
    if not config_file.exists() or config_file.read_text() != text:
        config_file.write_text(text)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    return home
