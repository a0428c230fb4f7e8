{#- One row per person (crm.users) with the behaviour the segmentation, recommendation and
    send-time models read. Deterministic: "now" is the newest received_at in the data
    (as_of), never the clock, so a rebuild gives the same numbers.

    Local time: each event's hour in the person's zone (crm.users.timezone: the device's,
    else the geo position's, else the shop's), converted by PostgreSQL's tz database with
    the zone's rules on the event's date, daylight saving included. -#}

with

event_person as (

    select event_id, user_id from {{ ref('int_event_person') }}
    where user_id is not null

),

users as (

    select user_id, auth_status, timezone, timezone_source from {{ ref('users') }}

),

events as (

    -- the one scan of stg_events (a wide table): every part below reads this
    select
        p.user_id, e.event_type, e.event_ts, e.device_type, e.product_id, e.category,
        -- every person with events is in users; the default only guards the join
        coalesce(u.timezone, {{ shop_timezone() }}) as timezone
    from {{ ref('stg_events') }} as e
    join event_person as p using (event_id)
    left join users as u on u.user_id = p.user_id

),

as_of as (

    select max(received_at) as as_of from {{ ref('stg_events') }}

),

-- one compact pass over the events; everything below works on this
activity_cube as (

    select
        user_id,
        event_type not in {{ sessions_non_browsing_types() }} as is_browsing,
        event_type,
        device_type,
        extract(hour from event_ts at time zone timezone)::integer as local_hour,
        count(*) as n,
        max(event_ts) as last_ts
    from events
    group by 1, 2, 3, 4, 5

),

activity as (

    select
        user_id,
        sum(n) filter (where is_browsing) as events,
        max(last_ts) filter (where is_browsing) as last_seen_at,
        sum(n) filter (where is_browsing and device_type is not null) as device_events,
        coalesce(sum(n) filter (where is_browsing and device_type = 'web'), 0)
            as web_events,
        coalesce(sum(n) filter (where is_browsing and device_type = 'ios'), 0)
            as ios_events,
        coalesce(sum(n) filter (where is_browsing and device_type = 'android'), 0)
            as android_events,
        coalesce(sum(n) filter (where is_browsing and device_type = 'mobile'), 0)
            as mobile_events,
        coalesce(sum(n) filter (where event_type = 'push_received'), 0) as push_received,
        coalesce(sum(n) filter (where event_type = 'push_opened'), 0) as push_opened
    from activity_cube
    group by user_id

),

local_hours as (

    select user_id, local_hour, sum(n) as n
    from activity_cube
    where is_browsing
    group by 1, 2

),

hour_profile as (

    select
        u.user_id,
        array_agg(coalesce(h.n, 0)::integer order by g.hour) as active_hours_local,
        (array_agg(g.hour order by h.n desc nulls last, g.hour))[1] as peak_hour_local
    from (select distinct user_id from local_hours) as u
    cross join generate_series(0, 23) as g(hour)
    left join local_hours as h on h.user_id = u.user_id and h.local_hour = g.hour
    group by u.user_id

),

product_categories as (

    select product_id, category from {{ ref('dim_products') }}
    where category is not null

),

category_touches as (

    -- views and carts (carts carry no category: take the product's), plus bought lines
    select e.user_id, coalesce(e.category, pc.category) as category
    from events as e
    left join product_categories as pc using (product_id)
    where e.event_type in ('product_view', 'add_to_cart')
    union all
    select o.user_id, pc.category
    from {{ ref('purchase_history') }} as o
    cross join lateral jsonb_array_elements(o.order_items) as item
    join product_categories as pc on pc.product_id = item ->> 'product_id'
    where jsonb_typeof(o.order_items) = 'array'

),

category_shares as (

    select
        user_id,
        category,
        count(*)::numeric / sum(count(*)) over (partition by user_id) as share,
        row_number() over (partition by user_id order by count(*) desc, category) as rank
    from category_touches
    where category is not null
    group by user_id, category

),

category_affinity as (

    select
        user_id,
        jsonb_object_agg(category, round(share, 3)) as top_categories,
        min(category) filter (where rank = 1) as top_category
    from category_shares
    where rank <= 3
    group by user_id

),

orders as (

    select
        user_id,
        count(*) as orders,
        sum(total_price) as monetary,
        max(coalesce(purchased_at, purchase_date::timestamptz)) as last_order_at
    from {{ ref('purchase_history') }}
    group by user_id

),

sessions as (

    select user_id, count(*) as sessions, max(ended_at) as last_session_at
    from {{ ref('fct_sessions') }}
    where user_id is not null
    group by user_id

),

imported_visits as (

    select user_id, max(last_visit) as last_visit
    from {{ ref('visit_history') }}
    group by user_id

),

final as (

    select
        u.user_id,
        a.as_of,
        -- recency (days, fractional), frequency, monetary
        round(extract(epoch from a.as_of - o.last_order_at)::numeric / 86400, 3)
            as days_since_last_order,
        round(extract(epoch from a.as_of - greatest(s.last_session_at, v.last_visit))::numeric
            / 86400, 3) as days_since_last_visit,
        coalesce(o.orders, 0) as orders,
        coalesce(o.monetary, 0) as monetary,
        round(o.monetary / nullif(o.orders, 0), 2) as avg_order_value,
        o.last_order_at,
        coalesce(s.sessions, 0) as sessions,
        coalesce(act.events, 0) as events,
        -- device mix: shares of browsing events ('mobile' = an app that did not say which)
        round(act.web_events::numeric / nullif(act.device_events, 0), 4) as share_web,
        round(act.ios_events::numeric / nullif(act.device_events, 0), 4) as share_ios,
        round(act.android_events::numeric / nullif(act.device_events, 0), 4) as share_android,
        round(act.mobile_events::numeric / nullif(act.device_events, 0), 4) as share_mobile,
        -- active hours, local time
        u.timezone,
        u.timezone_source,
        h.active_hours_local,
        h.peak_hour_local,
        -- interests
        c.top_categories,
        c.top_category,
        -- push
        coalesce(act.push_received, 0) as push_received,
        coalesce(act.push_opened, 0) as push_opened,
        round(act.push_opened::numeric / nullif(act.push_received, 0), 4) as push_open_rate,
        greatest(act.last_seen_at, v.last_visit) as last_seen_at,
        u.auth_status as is_authorised
    from users as u
    cross join as_of as a
    left join activity as act using (user_id)
    left join hour_profile as h using (user_id)
    left join category_affinity as c using (user_id)
    left join orders as o using (user_id)
    left join sessions as s using (user_id)
    left join imported_visits as v using (user_id)

)

select * from final
