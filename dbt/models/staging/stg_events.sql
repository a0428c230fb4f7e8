{#- One row per event_id, typed. Incremental: each run reads the raw.events rows received
    after the newest row already here minus `lookback_days` (rows that committed out of
    order, or a copy received earlier than the stored one) and stores the event_ids not
    stored yet, or stored from a later-received copy, so the table equals a full rebuild
    after any sequence of runs. Late events (old event_ts, new received_at) are new rows
    like any other, however late: downstream models re-open what they touch. Each row
    carries loaded_at, the stamp of the run that wrote it (a replaced copy gets the new
    one), so downstream models and tests read exactly the rows written since their last run
    instead of re-reading the lookback window. -#}
{{
    config(
        materialized='incremental',
        unique_key='event_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['event_id'], 'unique': True},
            {'columns': ['received_at']},
            {'columns': ['loaded_at']},
        ],
        pre_hook=["{{ identity_work_mem() }}"],
        post_hook=["{{ analyze_if_new() }}"],
    )
}}

with

source as (

    select * from {{ source('raw', 'events') }}
    {% if is_incremental() %}
    where received_at > {{ received_at_watermark(this) }}
    {% endif %}

),

blocklist as (

    select identifier_type, lower(btrim(value)) as value
    from {{ ref('identifier_blocklist') }}

),

{% if is_incremental() %}
unseen as (

    -- Skip what is already stored (the margin re-reads it) before sorting anything: the
    -- earliest received copy stays (a copy received earlier than the stored one, committed
    -- later, replaces it through delete+insert on event_id).
    select s.*
    from source as s
    where not exists (
        select 1 from {{ this }} as t
        where t.event_id = s.event_id and t.received_at <= s.received_at
    )

),
{% else %}
unseen as (select * from source),
{% endif %}

deduplicated as (

    -- A retried event keeps its event_id (possibly with another client timestamp, which
    -- the raw primary key would allow twice): the first received copy wins.
    select distinct on (event_id) *
    from unseen
    order by event_id, received_at, event_ts

),

renamed as (

    select
        -- envelope
        event_id,
        event_type,
        event_ts,
        received_at,
        source,
        {{ clean_identifier('client_id', 'client_id') }} as client_id,
        {{ clean_identifier('user_id', 'user_id') }} as user_id,
        nullif(lower(btrim(device_type)), '') as device_type,
        {{ clean_identifier('push_token', 'push_token') }} as push_token,
        {{ clean_identifier('lower(email)', 'email') }} as email,
        {{ clean_identifier("regexp_replace(phone, '[^0-9]', '', 'g')", 'phone') }} as phone,
        -- auth_status may come as 0/1, a boolean or a string
        case jsonb_typeof(payload -> 'auth_status')
            when 'boolean' then (payload ->> 'auth_status')::boolean
            when 'number' then (payload ->> 'auth_status')::numeric <> 0
            when 'string' then lower(payload ->> 'auth_status') in ('1', 'true', 'yes')
        end as auth_status,

        -- pages
        {{ json_text('page_url') }} as page_url,
        {{ json_text('referrer') }} as referrer,
        {{ json_number('time_spent') }} as time_spent,
        {{ json_number('scroll_depth') }} as scroll_depth,
        {{ json_text('clicked_element') }} as clicked_element,
        {{ json_text('search_query') }} as search_query,

        -- products and cart
        {{ json_text('product_id') }} as product_id,
        {{ json_text('product_name') }} as product_name,
        {{ json_text('category') }} as category,
        {{ json_number('price') }} as price,
        {{ json_number('quantity') }}::integer as quantity,
        case when jsonb_typeof(payload -> 'cart_items') = 'array'
            then payload -> 'cart_items' end as cart_items,

        -- orders and payments
        {{ json_text('order_id') }} as order_id,
        case when jsonb_typeof(payload -> 'order_items') = 'array'
            then payload -> 'order_items' end as order_items,
        {{ json_number('total_price') }} as total_price,
        {{ json_number('payment_amount') }} as payment_amount,
        {{ json_text('payment_method') }} as payment_method,
        {{ json_text('error_message') }} as error_message,
        {{ json_text('shipping_address') }} as shipping_address,

        -- push
        {{ json_text('notification_type') }} as notification_type,
        {{ json_text('campaign_id') }} as campaign_id,

        -- geo
        {{ json_number('latitude') }}::double precision as latitude,
        {{ json_number('longitude') }}::double precision as longitude,

        -- imported history
        case when payload ->> 'purchase_date' ~ '^\d{4}-\d{2}-\d{2}'
            then left(payload ->> 'purchase_date', 10)::date end as purchase_date,
        {{ json_number('visit_count') }}::integer as visit_count,
        case when payload ->> 'last_visit' ~ '^\d{4}-\d{2}-\d{2}'
            then (payload ->> 'last_visit')::timestamptz end as last_visit,

        -- recommendations
        case when jsonb_typeof(payload -> 'recommended_products') = 'array'
            then payload -> 'recommended_products' end as recommended_products,

        -- the event as sent, for fields not typed above
        payload,

        -- the dbt run that wrote this row: downstream incremental models and the data tests
        -- read the rows stamped after what they have seen, not a received_at window
        {{ run_loaded_at() }} as loaded_at

    from deduplicated

)

select * from renamed
