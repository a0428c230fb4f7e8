{#- Push tokens of each person (spec section 3.3), a row per (person, token). A token that
    moved to another account (app reinstalled, phone sold) belongs to the latest account:
    the older rows stay for history with is_valid false; so does a token its device later
    replaced with another, a token FCM or APNs answered as dead (push.token_invalidations)
    from the next build on, and a token last used on a public device (a kiosk). Senders use only is_valid rows. -#}

with

events as (

    select user_id, push_token, client_id, device_type, event_ts
    from {{ ref('int_event_person') }}
    where user_id is not null and push_token is not null

),

per_device as (

    -- a few rows per (person, token) instead of every push event: the sorts below stay small
    select
        user_id,
        push_token,
        client_id,
        device_type,
        min(event_ts) as created_at,
        max(event_ts) as last_used_at,
        count(*) as n_events
    from events
    group by user_id, push_token, client_id, device_type

),

usage as (

    select
        user_id,
        push_token,
        min(created_at) as created_at,
        max(last_used_at) as last_used_at,
        sum(n_events) as n_events,
        -- the ClientID and device type of its latest event (ties: the greatest value)
        (array_agg(client_id order by last_used_at desc, client_id desc)
            filter (where client_id is not null))[1] as client_id,
        (array_agg(device_type order by last_used_at desc, device_type desc)
            filter (where device_type is not null))[1] as reported_device_type
    from per_device
    group by user_id, push_token

),

token_owner as (

    -- the account (person) that used the token last owns it now
    select distinct on (push_token) push_token, user_id as current_user_id, created_at
    from usage
    order by push_token, last_used_at desc, user_id

),

device_token as (

    -- the token each device reported last; an older token of that device is replaced
    select distinct on (client_id) client_id, push_token as current_token
    from (
        select client_id, push_token, max(last_used_at) as last_used_at
        from per_device
        where client_id is not null
        group by client_id, push_token
    ) as t
    order by client_id, last_used_at desc, push_token

),

replacement as (

    select d.client_id, d.current_token, min(p.created_at) as replaced_at
    from device_token as d
    join per_device as p on p.client_id = d.client_id and p.push_token = d.current_token
    group by d.client_id, d.current_token

),

final as (

    select
        {{ identity_uuid("'push_token:' || u.push_token || '|' || u.user_id::text") }} as id,
        u.user_id,
        u.push_token,
        case
            when u.reported_device_type in ('android', 'ios', 'web') then u.reported_device_type
            -- old apps report "mobile": an APNs token is 64 hex digits, FCM's are longer
            when u.push_token ~ '^[0-9a-fA-F]{64}$' then 'ios'
            when u.reported_device_type = 'mobile' or u.push_token like '%:%' then 'android'
            else 'web'
        end as device_type,
        u.created_at,
        u.last_used_at,
        u.client_id,
        u.n_events,
        o.current_user_id = u.user_id
            and coalesce(d.current_token = u.push_token, true)
            and i.push_token is null
            and pd.identifier_value is null as is_valid,
        case
            when i.push_token is not null then 'rejected_by_push_service'
            -- a kiosk's subscription reaches whoever stands at the kiosk, not its shopper
            when pd.identifier_value is not null then 'public_device'
            when o.current_user_id <> u.user_id then 'moved_to_another_user'
            when d.current_token <> u.push_token then 'replaced_on_device'
        end as invalid_reason,
        case
            when i.push_token is not null then i.invalidated_at
            when pd.identifier_value is not null then u.created_at
            when o.current_user_id <> u.user_id then o.created_at
            when d.current_token <> u.push_token then r.replaced_at
        end as invalidated_at
    from usage as u
    join token_owner as o on o.push_token = u.push_token
    left join device_token as d on d.client_id = u.client_id
    left join replacement as r on r.client_id = u.client_id
    left join {{ source('push', 'token_invalidations') }} as i on i.push_token = u.push_token
    left join {{ ref('int_identity_graph') }} as pd
        on pd.identifier_type = 'client_id' and pd.identifier_value = u.client_id
        and pd.role = 'public'

)

select * from final
