{#- Audit: sessions too long or too busy to be a person browsing (a bot, a stuck tracker
    replaying its queue, a kiosk that is never idle). Kept out of fct_sessions and every
    metric built on it, listed here so someone looks at them. -#}

with

runaways as (

    select * from {{ ref('int_sessions') }}
    where is_runaway

),

final as (

    select
        session_id,
        session_key,
        client_id,
        account_id,
        device_type,
        started_at,
        ended_at,
        duration_seconds,
        events,
        case
            when events > {{ var("session_max_events", 5000) | int }} then 'too_many_events'
            else 'too_long'
        end as reason
    from runaways

)

select * from final
