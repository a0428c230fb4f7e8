{#- Products as the events describe them: the latest name, category and price seen (a
    product renamed or repriced shows its current state), when it was first and last seen,
    and how often it was viewed, carted and bought. Bought counts come from purchase_history,
    so an order both imported and seen live counts once. -#}

with

product_events as (

    select event_id, event_type, event_ts, product_id, product_name, category, price
    from {{ ref('stg_events') }}
    where event_type in ('product_view', 'add_to_cart', 'remove_from_cart')
        and product_id is not null

),

event_stats as (

    select
        product_id,
        (array_agg(product_name order by event_ts desc, event_id desc)
            filter (where product_name is not null))[1] as product_name,
        (array_agg(category order by event_ts desc, event_id desc)
            filter (where category is not null))[1] as category,
        (array_agg(price order by event_ts desc, event_id desc)
            filter (where price is not null))[1] as price,
        min(event_ts) as first_seen_at,
        max(event_ts) as last_seen_at,
        count(*) filter (where event_type = 'product_view') as views,
        count(*) filter (where event_type = 'add_to_cart') as carts
    from product_events
    group by product_id

),

order_lines as (

    select
        item ->> 'product_id' as product_id,
        o.order_id,
        coalesce(o.purchased_at, o.purchase_date::timestamptz) as purchased_at,
        case when jsonb_typeof(item -> 'quantity') = 'number'
            then (item ->> 'quantity')::numeric end as quantity,
        case when jsonb_typeof(item -> 'price') = 'number'
            then (item ->> 'price')::numeric end as price
    from {{ ref('purchase_history') }} as o
    cross join lateral jsonb_array_elements(o.order_items) as item
    where jsonb_typeof(o.order_items) = 'array' and item ->> 'product_id' is not null

),

purchase_stats as (

    select
        product_id,
        count(distinct order_id) as purchases,
        sum(coalesce(quantity, 1)) as units_purchased,
        (array_agg(price order by purchased_at desc nulls last, order_id desc)
            filter (where price is not null))[1] as last_price_paid,
        min(purchased_at) as first_purchased_at,
        max(purchased_at) as last_purchased_at
    from order_lines
    group by product_id

),

final as (

    select
        product_id,
        e.product_name,
        e.category,
        coalesce(e.price, p.last_price_paid) as price,
        least(e.first_seen_at, p.first_purchased_at) as first_seen_at,
        greatest(e.last_seen_at, p.last_purchased_at) as last_seen_at,
        coalesce(e.views, 0) as views,
        coalesce(e.carts, 0) as carts,
        coalesce(p.purchases, 0) as purchases,
        coalesce(p.units_purchased, 0) as units_purchased
    from event_stats as e
    full join purchase_stats as p using (product_id)

)

select * from final
