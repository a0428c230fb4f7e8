{#- The time zone evidence of each person who has any: the most recent zone one of their
    devices sent (`timezone` in the event: the browser's Intl zone, the app's device zone),
    and the zone of their most recent geo_location position (enrich.geo_timezones, looked up
    by crm/timezones.py before dbt runs). crm.users chooses: device, else geo, else the
    shop's default. A zone PostgreSQL does not know (its tz database older than the
    collector's) is passed over, so `at time zone` downstream never fails. -#}
{{ config(pre_hook=["{{ identity_work_mem() }}"]) }}

with

known_zones as (

    select name from pg_timezone_names

),

evidence as (

    -- one pass over the events that carry a zone or a position, with their person
    select
        p.user_id,
        e.event_ts,
        case when jsonb_typeof(e.payload -> 'timezone') = 'string'
            then e.payload ->> 'timezone' end as device_zone,
        -- rounded as crm/timezones.py rounds the raw payload (same casts as stg_events)
        case when e.event_type = 'geo_location'
            then round(e.latitude::numeric, 2) end as latitude,
        case when e.event_type = 'geo_location'
            then round(e.longitude::numeric, 2) end as longitude
    from {{ ref('stg_events') }} as e
    join {{ ref('int_event_person') }} as p using (event_id)
    where p.user_id is not null
        and (e.payload ? 'timezone' or e.event_type = 'geo_location')

),

-- per zone first (a handful per person), then the latest: no sort of every event
device_candidates as (

    select user_id, device_zone as timezone, max(event_ts) as timezone_at
    from evidence
    where device_zone in (select name from known_zones)
    group by 1, 2

),

device_zones as (

    -- across all the person's devices; a tie in time goes to the first zone by name
    select distinct on (user_id) user_id, timezone, timezone_at
    from device_candidates
    order by user_id, timezone_at desc, timezone

),

geo_candidates as (

    select v.user_id, g.timezone, max(v.event_ts) as timezone_at
    from evidence as v
    join {{ source('enrich', 'geo_timezones') }} as g
        on g.latitude = v.latitude and g.longitude = v.longitude
    where g.timezone in (select name from known_zones)
    group by 1, 2

),

geo_zones as (

    select distinct on (user_id) user_id, timezone, timezone_at
    from geo_candidates
    order by user_id, timezone_at desc, timezone

)

select
    user_id,
    d.timezone as device_timezone,
    d.timezone_at as device_timezone_at,
    g.timezone as geo_timezone,
    g.timezone_at as geo_timezone_at
from device_zones as d
full join geo_zones as g using (user_id)
