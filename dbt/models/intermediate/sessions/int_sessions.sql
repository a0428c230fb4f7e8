{#- Sessions per device (session_key): a new one after `session_timeout_minutes` (30) of
    inactivity, exactly 30 minutes still continuing it, or when an event carries another
    account than the one last logged in on the device (a family tablet handed over).
    Anonymous events never split a session: browsing, then logging in, is one visit.

    Incremental, snowplow-style but exact: for each device with newly loaded events
    (int_session_events.loaded_at newer than any here), the sessions that end within the
    timeout before its earliest new event, and all later ones, are dropped and the device's
    events from the start of the first of them are sessionised again, starting from the
    account last logged in before it (carried in last_device_account). Earlier sessions
    cannot change: they end more than the timeout before anything new. The model's output is
    then every session of the touched devices (the kept ones copied), and delete+insert on
    session_key swaps them in, so any sequence of runs equals one full refresh.

    Identity is deliberately absent: the person of a session is resolved in fct_sessions,
    on every run, because a later login re-attributes a device's whole past. -#}
{{
    config(
        materialized='incremental',
        unique_key='session_key',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        pre_hook=sessions_work_mem(),
        indexes=[
            {'columns': ['session_key', 'ended_at']},
            {'columns': ['session_id'], 'unique': True},
        ],
    )
}}

with

{#- int_session_events is named in each CTE rather than once as a CTE of its own: read twice,
    a CTE would be materialised whole (every event of history, to disk) on each run, where
    the incremental reads below need only its loaded_at and session_key indexes. -#}

{% if is_incremental() %}

new_events as (

    select session_key, min(event_ts) as first_new_ts
    from {{ ref('int_session_events') }}
    where loaded_at > {{ loaded_at_watermark(this, 'max_loaded_at') }}
    group by session_key

),

previous as (

    select s.*, n.first_new_ts,
        s.ended_at >= n.first_new_ts - {{ sessions_timeout() }} as is_touched
    from {{ this }} as s
    join new_events as n using (session_key)

),

first_touched as (

    select distinct on (session_key) session_key, started_at, first_event_id
    from previous
    where is_touched
    order by session_key, started_at, first_event_id

),

last_kept as (

    select distinct on (session_key) session_key, last_device_account
    from previous
    where not is_touched
    order by session_key, started_at desc, first_event_id desc

),

windows as (

    -- where re-sessionising starts: the first touched session, or the earliest new event
    -- if it comes before it (or the device has no touched session)
    select
        n.session_key,
        case when t.started_at is null or n.first_new_ts <= t.started_at
            then n.first_new_ts else t.started_at end as from_ts,
        case when t.started_at is null or n.first_new_ts <= t.started_at
            then '00000000-0000-0000-0000-000000000000'::uuid
            else t.first_event_id end as from_event_id,
        k.last_device_account as carried_account
    from new_events as n
    left join first_touched as t using (session_key)
    left join last_kept as k using (session_key)

),

window_events as (

    select e.*, w.carried_account
    from {{ ref('int_session_events') }} as e
    join windows as w
        on e.session_key = w.session_key
        and (e.event_ts, e.event_id) >= (w.from_ts, w.from_event_id)

),

kept as (

    select * from previous where not is_touched

),

{% else %}

window_events as (

    select *, null::text as carried_account from {{ ref('int_session_events') }}

),

{% endif %}

with_account_runs as (

    select
        *,
        lag(event_ts) over device_order as previous_ts,
        -- logins so far on the device: the account last logged in is the first of its run
        count(account_id) over device_order as account_run
    from window_events
    window device_order as (partition by session_key order by event_ts, event_id)

),

with_device_account as (

    select
        *,
        coalesce(
            first_value(account_id) over (
                partition by session_key, account_run order by event_ts, event_id
            ),
            carried_account
        ) as device_account
    from with_account_runs

),

flagged as (

    select
        *,
        case
            when previous_ts is null then 1
            when event_ts - previous_ts > {{ sessions_timeout() }} then 1
            when account_id <> coalesce(
                lag(device_account) over device_order, carried_account
            ) then 1
            else 0
        end as is_session_start
    from with_device_account
    window device_order as (partition by session_key order by event_ts, event_id)

),

numbered as (

    select
        *,
        sum(is_session_start) over (
            partition by session_key order by event_ts, event_id
            rows between unbounded preceding and current row
        ) as session_no
    from flagged

),

orders as (

    -- an order counts once per session even if order_complete was sent twice
    select session_key, session_no, count(*) as n_orders, sum(total_price) as revenue
    from (
        select distinct on (session_key, session_no, coalesce(order_id, event_id::text))
            session_key, session_no, total_price
        from numbered
        where event_type = 'order_complete'
        order by session_key, session_no, coalesce(order_id, event_id::text),
            event_ts, event_id
    ) as first_copies
    group by session_key, session_no

),

sessions as (

    select
        session_key,
        session_no,
        (array_agg(event_id order by event_ts, event_id))[1] as first_event_id,
        (array_agg(event_id order by event_ts, event_id)
            filter (where account_id is not null))[1] as account_event_id,
        max(client_id) as client_id,
        max(account_id) as account_id,
        (array_agg(device_account order by event_ts desc, event_id desc))[1]
            as last_device_account,
        (array_agg(device_type order by event_ts, event_id)
            filter (where device_type is not null))[1] as device_type,
        min(event_ts) as started_at,
        max(event_ts) as ended_at,
        count(*) as events,
        count(*) filter (where event_type = 'page_view') as page_views,
        (array_agg(page_url order by event_ts, event_id)
            filter (where event_type = 'page_view'))[1] as landing_page,
        (array_agg(referrer order by event_ts, event_id)
            filter (where event_type = 'page_view'))[1] as referrer,
        bool_or(event_type = 'order_complete') as converted,
        max(received_at) as max_received_at,
        max(loaded_at) as max_loaded_at
    from numbered
    group by session_key, session_no

),

rebuilt as (

    select
        {{ identity_uuid("'session:' || s.session_key || ':' || s.first_event_id") }}
            as session_id,
        s.session_key,
        s.first_event_id,
        s.account_event_id,
        s.client_id,
        s.account_id,
        s.last_device_account,
        s.device_type,
        s.started_at,
        s.ended_at,
        extract(epoch from s.ended_at - s.started_at)::numeric(12, 3) as duration_seconds,
        s.events,
        s.page_views,
        s.landing_page,
        s.referrer,
        s.converted,
        coalesce(o.n_orders, 0) as n_orders,
        coalesce(o.revenue, 0) as revenue,
        -- runaways (bots, stuck trackers, a kiosk never idle) go to sessions_quarantine
        s.ended_at - s.started_at > interval '{{ var("session_max_hours", 24) | int }} hours'
            or s.events > {{ var("session_max_events", 5000) | int }} as is_runaway,
        s.max_received_at,
        s.max_loaded_at
    from sessions as s
    left join orders as o using (session_key, session_no)

)

{% if is_incremental() %}
select * from rebuilt
union all
select
    session_id, session_key, first_event_id, account_event_id, client_id, account_id,
    last_device_account, device_type, started_at, ended_at, duration_seconds, events,
    page_views, landing_page, referrer, converted, n_orders, revenue, is_runaway,
    max_received_at, max_loaded_at
from kept
{% else %}
select * from rebuilt
{% endif %}
