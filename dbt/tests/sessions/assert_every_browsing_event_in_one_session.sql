{#- Sessions account for every browsing event exactly once: the event counts add up to the
    events there are, per device (an incremental run that lost or doubled a window would not). -#}
with

events as (
    select session_key, count(*) as n from {{ ref('int_session_events') }} group by 1
),

sessions as (
    select session_key, sum(events) as n from {{ ref('int_sessions') }} group by 1
)

select session_key, e.n as events, s.n as in_sessions
from events as e
full join sessions as s using (session_key)
where e.n is distinct from s.n
