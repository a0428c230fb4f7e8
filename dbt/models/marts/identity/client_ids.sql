{#- Devices (ClientIDs) of each person (spec section 3.2). A family device has a row per
    account that used it; a public device (kiosk) only its own anonymous visitor's row: it
    is nobody's device. -#}

with

events as (

    select * from {{ ref('int_event_person') }}
    where user_id is not null and client_id is not null

),

clients as (

    select identifier_value as client_id, role, device_type, linked_at, user_id as owner_id
    from {{ ref('int_identity_graph') }}
    where identifier_type = 'client_id'

),

pairs as (

    select
        user_id,
        client_id,
        min(event_ts) as created_at,
        max(event_ts) as last_seen_at,
        count(*) as n_events
    from events
    group by user_id, client_id

),

final as (

    select
        {{ identity_uuid("'client_id:' || p.client_id || '|' || p.user_id::text") }} as id,
        p.user_id,
        p.client_id,
        c.device_type,
        p.created_at,
        p.last_seen_at,
        -- when this device became part of the person (null: it always was)
        case when c.owner_id = p.user_id then c.linked_at end as linked_at,
        p.n_events,
        c.role = 'shared' as is_shared,
        c.role = 'public' as is_public
    from pairs as p
    join clients as c on c.client_id = p.client_id
    where c.role <> 'public' or c.owner_id = p.user_id

)

select * from final
