{#- Browsing sessions with their person. The person is looked up on every run (a table, not
    incremental): when a device later logs in, identity re-attributes its whole past, and the
    sessions follow. Runaway sessions are left out (see sessions_quarantine). -#}

with

sessions as (

    select * from {{ ref('int_sessions') }}
    where not is_runaway

),

event_person as (

    select event_id, user_id from {{ ref('int_event_person') }}

),

final as (

    select
        s.session_id,
        -- the person of the session's first logged-in event, else of its first event
        p.user_id,
        s.client_id,
        s.device_type,
        s.started_at,
        s.ended_at,
        s.duration_seconds,
        s.page_views,
        s.events,
        s.landing_page,
        s.referrer,
        s.converted,
        s.n_orders,
        s.revenue,
        s.account_id
    from sessions as s
    left join event_person as p
        on p.event_id = coalesce(s.account_event_id, s.first_event_id)

)

select * from final
