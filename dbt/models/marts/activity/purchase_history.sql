{#- Spec 9.1: a person's orders (user_id, order_id, order_items, total_price, purchase_date),
    merging imported history (purchase_history events) with orders seen live
    (order_complete). One row per order_id: an order both imported and seen live counts once,
    with the live copy's details (exact time, payment method); a retried order_complete
    counts once too. -#}

with

order_events as (

    select
        event_id, event_type, event_ts, order_id, order_items, total_price, purchase_date,
        payment_method
    from {{ ref('stg_events') }}
    where event_type in ('order_complete', 'purchase_history')
        and order_id is not null

),

event_person as (

    select event_id, user_id from {{ ref('int_event_person') }}

),

with_person as (

    select o.*, p.user_id
    from order_events as o
    join event_person as p using (event_id)
    where p.user_id is not null

),

sources as (

    select
        order_id,
        bool_or(event_type = 'order_complete') as is_observed,
        bool_or(event_type = 'purchase_history') as is_imported
    from with_person
    group by order_id

),

chosen as (

    -- the live copy wins; among copies of one kind, the earliest
    select distinct on (order_id) *
    from with_person
    order by order_id, event_type = 'order_complete' desc, event_ts, event_id

),

final as (

    select
        c.user_id,
        c.order_id,
        c.order_items,
        coalesce(
            c.total_price,
            (select sum((item ->> 'quantity')::numeric * (item ->> 'price')::numeric)
             from jsonb_array_elements(c.order_items) as item)
        ) as total_price,
        case when c.event_type = 'order_complete' then (c.event_ts at time zone 'UTC')::date
            else c.purchase_date end as purchase_date,
        -- exact time for live orders; imports only know the day
        case when c.event_type = 'order_complete' then c.event_ts end as purchased_at,
        c.payment_method,
        coalesce(jsonb_array_length(c.order_items), 0) as n_lines,
        case
            when s.is_observed and s.is_imported then 'both'
            when s.is_observed then 'observed'
            else 'imported'
        end as source,
        c.event_id
    from chosen as c
    join sources as s using (order_id)

)

select * from final
