"""Where things live and which database to use: one place, read from the environment."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = PROJECT_ROOT / "sql"


def state_dir() -> Path:
    """Project-local, git-ignored folder for the embedded database and other run state."""
    return Path(os.environ.get("CRM_STATE_DIR", PROJECT_ROOT / ".crm")).resolve()


def configured_database_url() -> str | None:
    """The external server chosen by the user, if any (PostgreSQL 14+)."""
    return os.environ.get("CRM_DATABASE_URL") or None


def database_url() -> str:
    """URL of the database every command uses: `CRM_DATABASE_URL`, else the embedded server
    (started on demand, so no command needs a manual `crm db up` first)."""
    url = configured_database_url()
    if url:
        return url
    from crm.db.embedded import EmbeddedPostgres

    return EmbeddedPostgres(state_dir() / "pgdata").start()


DEFAULT_SHOP_TIMEZONE = "Europe/Moscow"


def shop_timezone() -> str:
    """The shop's IANA zone (`CRM_SHOP_TIMEZONE`, default Europe/Moscow): the time zone of
    people whose devices sent none and who never shared a location. Checked here, because
    dbt pastes it into SQL and an unknown zone would fail the build far from its cause."""
    import zoneinfo

    name = os.environ.get("CRM_SHOP_TIMEZONE", "").strip() or DEFAULT_SHOP_TIMEZONE
    # The names the collector accepts too (`localtime` is a system file, not a zone).
    if name not in zoneinfo.available_timezones() or name in ("localtime", "Factory"):
        raise ValueError(
            f"CRM_SHOP_TIMEZONE={name!r} is not an IANA time zone name (e.g. Europe/Moscow)"
        )
    return name
