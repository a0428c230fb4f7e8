{#- A device's sessions follow one another: an incremental run that rebuilt too little (or
    too much) would leave two sessions covering the same stretch of time. -#}
select session_key, session_id, started_at, previous_ended_at
from (
    select
        session_key, session_id, started_at,
        lag(ended_at) over (partition by session_key order by started_at, first_event_id)
            as previous_ended_at
    from {{ ref('int_sessions') }}
) as s
where started_at < previous_ended_at
