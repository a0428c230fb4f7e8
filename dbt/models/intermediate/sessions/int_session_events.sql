{#- The browsing events, narrowed to what sessionising needs, keyed by device and stamped
    with the dbt run that first loaded them (loaded_at). int_sessions re-sessionises exactly
    the devices whose events have a newer stamp than it has seen, so it needs no guess about
    what is new (a received_at lookback alone would re-read every event loaded in the last
    few days). Incremental: reads the stg_events rows stamped (loaded_at) after its own
    newest row, inserts only event_ids not here yet. -#}
{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['event_id'], 'unique': True},
            {'columns': ['session_key', 'event_ts', 'event_id']},
            {'columns': ['loaded_at']},
            {'columns': ['received_at']},
        ],
    )
}}

with

events as (

    select * from {{ ref('stg_events') }}
    where event_type not in {{ sessions_non_browsing_types() }}
        -- nothing to key a session on (a junk ClientID and no account)
        and coalesce(client_id, user_id) is not null
    {% if is_incremental() %}
        -- Rows stg_events wrote since this model's newest row (its loaded_at is the
        -- same run's stamp); late events are new rows here too, whatever their event time.
        and loaded_at > {{ loaded_at_watermark(this) }}
    {% endif %}

),

{% if is_incremental() %}
new_events as (

    select e.* from events as e
    where not exists (select 1 from {{ this }} as t where t.event_id = e.event_id)

),
{% else %}
new_events as (select * from events),
{% endif %}

final as (

    select
        event_id,
        -- a device; events with an account but no ClientID (server side) go by the account
        case when client_id is not null then 'c:' || client_id else 'a:' || user_id end
            as session_key,
        event_ts,
        received_at,
        {{ run_loaded_at() }} as loaded_at,
        event_type,
        client_id,
        user_id as account_id,
        device_type,
        page_url,
        referrer,
        order_id,
        total_price
    from new_events

)

select * from final
