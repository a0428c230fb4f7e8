"""Ingestion health: the collector is a running service, not an asset; this domain reports on it.

`raw/events` is the table the collector writes (an external asset: Dagster never builds it).
`ingestion/raw_events_health` reads it and records what a data engineer checks first, with
asset checks on each figure: how fresh the newest received event is, the share of events
rejected over the last hour, and how many days of partitions exist ahead of today.
Thresholds come from the environment (defaults below).
"""


import datetime as dt
import os

import dagster as dg

from dagster_project.resources import CrmDatabase

RAW_EVENTS = dg.AssetKey(["raw", "events"])
HEALTH = dg.AssetKey(["ingestion", "raw_events_health"])


def _threshold(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


# Newest event older than this: the collector (or the site's tracker) has stopped.
MAX_STALENESS_MINUTES = _threshold("CRM_MAX_STALENESS_MINUTES", 24 * 60)
# Over the last hour, more rejected than this share of what arrived: a broken client.
MAX_REJECTED_SHARE = _threshold("CRM_MAX_REJECTED_SHARE", 0.2)
# The collector creates today's partition on demand; this many days ahead must exist so a
# restart at midnight or a migration never waits on DDL under load.
MIN_PARTITION_DAYS_AHEAD = _threshold("CRM_MIN_PARTITION_DAYS_AHEAD", 1)

raw_events = dg.AssetSpec(
    RAW_EVENTS, group_name="ingestion", kinds={"postgres"},
    description="Accepted tracking events, written only by the collector (`crm collector`, "
    "`crm ingest`); partitioned by received day. See docs/collector.md.",
)

PARTITIONS_SQL = """
select max(to_date(substr(c.relname, 8), 'YYYYMMDD'))
from pg_inherits i join pg_class c on c.oid = i.inhrelid
where i.inhparent = 'raw.events'::regclass and c.relname ~ '^events_[0-9]{8}$'
"""


def ingestion_figures(db: CrmDatabase) -> dict[str, float | int | None]:
    url_rows = db.query(
        "select count(*), max(received_at), "
        "count(*) filter (where received_at > now() - interval '1 hour') from raw.events")
    total, newest, last_hour = url_rows[0]
    rejected = db.scalar("select count(*) from raw.rejected_events "
                         "where received_at > now() - interval '1 hour'")
    last_day = db.scalar(PARTITIONS_SQL)
    now = dt.datetime.now(dt.UTC)
    arrived = last_hour + rejected
    return {
        "events": total,
        "minutes_since_newest": None if newest is None
        else round((now - newest).total_seconds() / 60, 1),
        "accepted_last_hour": last_hour,
        "rejected_last_hour": rejected,
        "rejected_share_last_hour": round(rejected / arrived, 4) if arrived else 0.0,
        "partition_days_ahead": None if last_day is None else (last_day - now.date()).days,
    }


@dg.asset(
    key=HEALTH, deps=[RAW_EVENTS], group_name="ingestion",
    description="What the collector has delivered: freshness of raw.events, rejected share "
    "over the last hour, partitions ahead. Recorded at each run; checked below.",
)
def raw_events_health(crm_db: CrmDatabase) -> dg.MaterializeResult:
    figures = ingestion_figures(crm_db)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": figures["events"],
        **{k: dg.MetadataValue.float(float(v)) if isinstance(v, float) else v
           for k, v in figures.items() if v is not None},
    })


@dg.asset_check(asset=HEALTH, description=f"The newest event in raw.events was received "
                f"within CRM_MAX_STALENESS_MINUTES ({MAX_STALENESS_MINUTES:g}).")
def raw_events_fresh(crm_db: CrmDatabase) -> dg.AssetCheckResult:
    minutes = ingestion_figures(crm_db)["minutes_since_newest"]
    return dg.AssetCheckResult(
        passed=minutes is not None and minutes <= MAX_STALENESS_MINUTES,
        metadata={"minutes_since_newest": -1.0 if minutes is None else float(minutes),
                  "limit_minutes": MAX_STALENESS_MINUTES},
        description="raw.events is empty" if minutes is None else None,
    )


@dg.asset_check(asset=HEALTH, description=f"At most CRM_MAX_REJECTED_SHARE "
                f"({MAX_REJECTED_SHARE:g}) of the last hour's events were rejected.")
def rejected_share_last_hour(crm_db: CrmDatabase) -> dg.AssetCheckResult:
    f = ingestion_figures(crm_db)
    return dg.AssetCheckResult(
        passed=f["rejected_share_last_hour"] <= MAX_REJECTED_SHARE,
        metadata={"rejected_share": float(f["rejected_share_last_hour"]),
                  "rejected": f["rejected_last_hour"], "accepted": f["accepted_last_hour"],
                  "limit": MAX_REJECTED_SHARE},
    )


@dg.asset_check(asset=HEALTH, description=f"raw.events has partitions at least "
                f"CRM_MIN_PARTITION_DAYS_AHEAD ({MIN_PARTITION_DAYS_AHEAD:g}) days ahead.")
def partitions_ahead(crm_db: CrmDatabase) -> dg.AssetCheckResult:
    days = ingestion_figures(crm_db)["partition_days_ahead"]
    return dg.AssetCheckResult(
        passed=days is not None and days >= MIN_PARTITION_DAYS_AHEAD,
        severity=dg.AssetCheckSeverity.WARN,  # the collector still creates today's itself
        metadata={"days_ahead": -1 if days is None else days,
                  "minimum": MIN_PARTITION_DAYS_AHEAD},
    )


defs = dg.Definitions(
    assets=[raw_events, raw_events_health],
    asset_checks=[raw_events_fresh, rejected_share_last_hour, partitions_ahead],
)
