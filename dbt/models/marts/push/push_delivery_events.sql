{#- The apps' push_received and push_opened events with the delivery id their push carried
    (catalogue 6.1 / 6.2: push.deliveries' id, UUID text), and whether it links to a push the
    ledger sent. Only 'linked' events count in push_delivery_outcomes; the rest are kept here
    so a bad app build or a forged id shows up in numbers instead of in the rates:
      no_delivery_id    the event carried none (an older app, a push sent by another tool)
      malformed         not a UUID (the collector refuses these; older or imported rows)
      unknown_delivery  a UUID no ledger row has
      not_sent          a ledger row that was never sent (skipped, failed, still planned) -#}

with

push_events as (

    select
        event_id,
        event_type,
        event_ts,
        received_at,
        client_id,
        push_token,
        {{ json_text('delivery_id') }} as delivery_id_text
    from {{ ref('stg_events') }}
    where event_type in ('push_received', 'push_opened')

),

parsed as (

    -- the cast only where the text is a UUID: one bad value must not fail the build
    select
        *,
        case
            when delivery_id_text ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                then delivery_id_text::uuid
        end as parsed_delivery_id
    from push_events

)

select
    p.event_id,
    p.event_type,
    p.event_ts,
    p.received_at,
    p.client_id,
    p.push_token,
    p.delivery_id_text,
    d.delivery_id,
    case
        when p.delivery_id_text is null then 'no_delivery_id'
        when p.parsed_delivery_id is null then 'malformed'
        when d.delivery_id is null then 'unknown_delivery'
        when d.status <> 'sent' then 'not_sent'
        else 'linked'
    end as link_status
from parsed as p
left join {{ source('push', 'deliveries') }} as d on d.delivery_id = p.parsed_delivery_id
