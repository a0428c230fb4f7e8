{#- The time zone evidence of each person who has any: the most recent zone one of their
    devices sent (`timezone` in the event: the browser's Intl zone, the app's device zone),
    and the zone of their most recent geo_location position (enrich.geo_timezones, looked up
    by crm/timezones.py before dbt runs). crm.users chooses: device, else geo, else the
    shop's default. A zone PostgreSQL does not know (its tz database older than the
    collector's) is passed over, so `at time zone` downstream never fails. -#}

with

known_zones as (

    select name from pg_timezone_names

),

event_person as (

    select event_id, user_id from {{ ref('int_event_person') }}
    where user_id is not null

),

device_zones as (

    -- across all the person's devices; a tie in time goes to the later received, then the id
    select distinct on (p.user_id)
        p.user_id,
        e.payload ->> 'timezone' as timezone,
        e.event_ts as timezone_at
    from {{ ref('stg_events') }} as e
    join event_person as p using (event_id)
    where jsonb_typeof(e.payload -> 'timezone') = 'string'
        and e.payload ->> 'timezone' in (select name from known_zones)
    order by p.user_id, e.event_ts desc, e.received_at desc, e.event_id desc

),

geo_zones as (

    -- rounded as crm/timezones.py rounds the raw payload (same casts as stg_events)
    select distinct on (p.user_id)
        p.user_id,
        g.timezone,
        e.event_ts as timezone_at
    from {{ ref('stg_events') }} as e
    join event_person as p using (event_id)
    join {{ source('enrich', 'geo_timezones') }} as g
        on g.latitude = round(e.latitude::numeric, 2)
        and g.longitude = round(e.longitude::numeric, 2)
    where e.event_type = 'geo_location'
        and g.timezone in (select name from known_zones)
    order by p.user_id, e.event_ts desc, e.received_at desc, e.event_id desc

)

select
    user_id,
    d.timezone as device_timezone,
    d.timezone_at as device_timezone_at,
    g.timezone as geo_timezone,
    g.timezone_at as geo_timezone_at
from device_zones as d
full join geo_zones as g using (user_id)
