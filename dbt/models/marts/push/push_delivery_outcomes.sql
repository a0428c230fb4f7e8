{#- One row per push.deliveries row (campaign, run, person, device) and what became of it:
    its ledger status and reason, and for a sent push whether the device reported it
    (push_received) and whether the person opened it (push_opened), from the events whose
    delivery id links to it (push_delivery_events). An open counts as delivered too: iOS
    reports a receipt only through a notification service extension, but an opened push
    certainly arrived. A push resent after a crash (same delivery id, shown once by the
    device) still counts once. -#}

with

deliveries as (

    select * from {{ source('push', 'deliveries') }}

),

feedback as (

    select
        delivery_id,
        min(event_ts) filter (where event_type = 'push_received') as received_at,
        min(event_ts) filter (where event_type = 'push_opened') as opened_at,
        count(*) filter (where event_type = 'push_received') as received_events,
        count(*) filter (where event_type = 'push_opened') as opened_events
    from {{ ref('push_delivery_events') }}
    where link_status = 'linked'
    group by delivery_id

),

history as (

    select old_user_id::text as old_user_id, new_user_id::text as new_user_id
    from {{ ref('user_id_history') }}

)

select
    d.delivery_id,
    d.campaign,
    d.run_id,
    d.person_id,
    -- the person's id now: an anonymous visitor planned under its ClientID's id may have
    -- been recognised as an account since (user_id_history)
    coalesce(h.new_user_id, d.person_id) as current_person_id,
    d.device,
    d.channel,
    d.push_token,
    d.status,
    d.reason,
    d.attempts,
    d.planned_at,
    d.send_at,
    case when d.status = 'sent' then d.finished_at end as sent_at,
    -- the UTC day it went out, or was due to
    (case when d.status = 'sent' then coalesce(d.finished_at, d.send_at) else d.send_at end
        at time zone 'UTC')::date as send_day,
    least(f.received_at, f.opened_at) as delivered_at,
    f.opened_at,
    f.delivery_id is not null as is_delivered,
    f.opened_at is not null as is_opened,
    -- from the device's own receipt where it sent one: both times on the device's clock, so
    -- a clock that runs wrong cancels out; else from the send (server clock), where a device
    -- clock behind the server's would give a negative wait, read as immediate
    greatest(0, extract(epoch from f.opened_at - coalesce(f.received_at, d.finished_at)))
        ::double precision as seconds_to_open,
    coalesce(f.received_events, 0) as received_events,
    coalesce(f.opened_events, 0) as opened_events
from deliveries as d
left join feedback as f on f.delivery_id = d.delivery_id
left join history as h on h.old_user_id = d.person_id
