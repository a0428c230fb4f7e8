{#- The distinct combinations of identifiers that events carry, with how often and when.
    A million events collapse to tens of thousands of rows here, so everything after this
    (edges, roles, the graph) is cheap whatever the event volume. -#}

with

events as (

    select user_id as account_id, client_id, email, phone, push_token, device_type, event_ts,
        event_type
    from {{ ref('stg_events') }}
    where coalesce(user_id, client_id, email, phone, push_token) is not null

),

signatures as (

    select
        account_id,
        client_id,
        email,
        phone,
        push_token,
        device_type,
        count(*) as n_events,
        -- people who log out after use are a kiosk's habit (int_identifiers)
        count(*) filter (where event_type = 'user_login') as n_logins,
        count(*) filter (where event_type = 'user_logout') as n_logouts,
        min(event_ts) as first_seen_at,
        max(event_ts) as last_seen_at
    from events
    group by account_id, client_id, email, phone, push_token, device_type

)

select
    row_number() over (
        order by account_id, client_id, email, phone, push_token, device_type
    ) as signature_no,
    *
from signatures
