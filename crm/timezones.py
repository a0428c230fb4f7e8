"""Time zones of geo_location positions, for people whose devices send no `timezone`.

SQL cannot map coordinates to a zone (that needs the zone polygons), so `crm transform` runs
this step before dbt: it reads the distinct positions of new geo_location events in raw.events,
rounded to 0.01 degree, looks up the ones not seen before with tzfpy (offline, zone polygons
built in) and stores them in `enrich.geo_timezones` (sql/005_geo_timezones.sql), which dbt reads
as a source (int_person_timezones). The person's zone itself is chosen in dbt: the device's own
zone first, then this lookup, then the shop's default (docs in users.yml).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from importlib.metadata import version

import psycopg
import tzfpy

__all__ = ["LOOKBACK", "GeoLookupSummary", "lookup_timezone", "update_geo_timezones"]

STEP = "geo_timezones"
# As dbt's `lookback_days`: rows committed out of order (the collector's flush delay, an
# ingest retrying) carry a received_at a little before the newest one already read.
LOOKBACK = timedelta(days=3)
LIBRARY = f"tzfpy {version('tzfpy')}"

# The same casts as stg_events (json number -> numeric -> double precision), then the same
# rounding int_person_timezones joins on, so both sides agree to the last digit.
_NEW_POSITIONS = """
with positions as (
    select distinct
        round(((payload ->> 'latitude')::numeric)::double precision::numeric, 2) as latitude,
        round(((payload ->> 'longitude')::numeric)::double precision::numeric, 2) as longitude
    from raw.events
    where event_type = 'geo_location'
      and received_at > %(since)s::timestamptz
      -- the partition key: prunes the days before the window
      and received_day >= (%(since)s::timestamptz at time zone 'UTC')::date
      and jsonb_typeof(payload -> 'latitude') = 'number'
      and jsonb_typeof(payload -> 'longitude') = 'number'
)
select p.latitude, p.longitude
from positions as p
where p.latitude between -90 and 90 and p.longitude between -180 and 180
  and not exists (
      select 1 from enrich.geo_timezones as g
      where g.latitude = p.latitude and g.longitude = p.longitude
  )
order by 1, 2
"""


@dataclass(frozen=True)
class GeoLookupSummary:
    looked_up: int  # new positions stored
    read_since: datetime | None  # None: all of raw.events was read


def lookup_timezone(latitude: float, longitude: float) -> str | None:
    """The IANA zone at a position (`Etc/GMT-N` on the open sea); None if there is none."""
    return tzfpy.get_tz(float(longitude), float(latitude)) or None  # tzfpy takes (lng, lat)


def update_geo_timezones(database_url: str, full: bool = False) -> GeoLookupSummary:
    """Look up the positions of geo_location events received since the last run (all of
    raw.events when `full`, as `crm transform --full-refresh` does) that are not stored yet."""
    with psycopg.connect(database_url) as conn:
        # One snapshot for both reads: the new watermark never passes a row not read.
        conn.execute("set transaction isolation level repeatable read")
        since: datetime | None = None
        if not full:
            row = conn.execute(
                "select received_at from enrich.watermarks where step = %s", (STEP,)
            ).fetchone()
            since = row[0] - LOOKBACK if row else None
        params = {"since": "-infinity" if since is None else since}
        newest = conn.execute(
            "select max(received_at) from raw.events where received_at > %(since)s::timestamptz"
            " and received_day >= (%(since)s::timestamptz at time zone 'UTC')::date",
            params,
        ).fetchone()[0]
        positions: list[tuple[Decimal, Decimal]] = conn.execute(
            _NEW_POSITIONS, params
        ).fetchall()
        rows = []
        for lat, lon in positions:
            zone = lookup_timezone(float(lat), float(lon))
            if zone:
                rows.append((lat, lon, zone, LIBRARY))
        with conn.cursor() as cur:
            cur.executemany(
                "insert into enrich.geo_timezones (latitude, longitude, timezone, looked_up_with)"
                " values (%s, %s, %s, %s) on conflict do nothing",
                rows,
            )
        if newest is not None:
            conn.execute(
                "insert into enrich.watermarks (step, received_at) values (%s, %s) "
                "on conflict (step) do update set received_at = "
                "greatest(enrich.watermarks.received_at, excluded.received_at)",
                (STEP, newest),
            )
    return GeoLookupSummary(len(rows), since)
