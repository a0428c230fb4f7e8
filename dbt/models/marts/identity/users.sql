{#- The CRM's people (spec section 3.1): one row per person with at least one event, known
    (auth_status true: the shop's account) or anonymous (a visitor known by its devices). -#}

with

graph as (

    select * from {{ ref('int_identity_graph') }}
    where person_anchor is not null

),

events as (

    select * from {{ ref('int_event_person') }}
    where user_id is not null

),

activity as (

    select
        user_id,
        min(event_ts) as first_seen_at,
        max(event_ts) as last_seen_at,
        count(*) as n_events,
        -- "logs in by e-mail" (spec scenario 2) may come without the shop's account id
        bool_or(event_type = 'user_login') as has_logged_in
    from events
    group by user_id

),

persons as (

    select
        user_id,
        min(person_anchor) as anchor,
        -- the anchor is the account itself for known people
        max(identifier_value) filter (where role = 'account') as external_user_id,
        min(first_seen_at) filter (where role = 'account') as authorised_at,
        (array_agg(identifier_value order by last_seen_at desc, identifier_value)
            filter (where identifier_type = 'email'))[1] as email,
        (array_agg(identifier_value order by last_seen_at desc, identifier_value)
            filter (where identifier_type = 'phone'))[1] as phone,
        -- the record changes when an identifier joins it (a new device, token, e-mail)
        max(coalesce(linked_at, first_seen_at)) as last_linked_at
    from graph
    group by user_id

),

final as (

    select
        p.user_id,
        p.external_user_id,
        p.email,
        p.phone,
        p.external_user_id is not null or a.has_logged_in as auth_status,
        a.first_seen_at as created_at,
        greatest(a.first_seen_at, p.authorised_at, p.last_linked_at) as updated_at,
        a.first_seen_at,
        a.last_seen_at,
        p.authorised_at,
        a.n_events,
        p.anchor as anchor_identifier,
        -- send times and quiet hours: the device's own zone, else the position's, else the shop's
        coalesce(tz.device_timezone, tz.geo_timezone, {{ shop_timezone() }}) as timezone,
        case
            when tz.device_timezone is not null then 'device'
            when tz.geo_timezone is not null then 'geo'
            else 'shop_default'
        end as timezone_source
    from activity as a
    join persons as p on p.user_id = a.user_id
    left join {{ ref('int_person_timezones') }} as tz on tz.user_id = a.user_id

)

select * from final
