{#- The person behind every event: one row per stg_events.event_id.

    In order: the account the event carries; else its device, if the device belongs to one
    person; on a shared (family) device, the account logged in on it at that time (the
    latest event with an account before this one; before the first login, the first
    account that logs in on it); else its e-mail, phone or push token; on a public device
    with nothing else, the device's own anonymous person. user_id is null only for an
    event without any usable identifier (e.g. a broken tracker's "undefined" ClientID). -#}

with

events as (

    select event_id, event_type, event_ts, user_id as account_id, client_id, email, phone,
        push_token, device_type
    from {{ ref('stg_events') }}

),

graph as (

    select identifier_type, identifier_value, role, person_anchor, first_account_id
    from {{ ref('int_identity_graph') }}

),

clients as (select * from graph where identifier_type = 'client_id'),
emails as (select * from graph where identifier_type = 'email'),
phones as (select * from graph where identifier_type = 'phone'),
push_tokens as (select * from graph where identifier_type = 'push_token'),

shared_device_events as (

    select
        e.event_id,
        e.client_id,
        e.event_ts,
        e.account_id,
        c.first_account_id,
        -- how many logins (events with an account) on this device so far
        count(e.account_id) over (
            partition by e.client_id order by e.event_ts, e.event_id
            rows between unbounded preceding and current row
        ) as login_no
    from events as e
    join clients as c on c.identifier_value = e.client_id and c.role = 'shared'

),

shared_device_accounts as (

    select
        event_id,
        coalesce(
            first_value(account_id) over (
                partition by client_id, login_no order by event_ts, event_id
            ),
            first_account_id
        ) as account_id
    from shared_device_events

),

attributed as (

    select
        e.event_id,
        e.event_type,
        e.event_ts,
        e.client_id,
        e.push_token,
        e.device_type,
        case
            when e.account_id is not null then 'account'
            when c.role in ('owned', 'anonymous') then 'client_id'
            when c.role = 'shared' then 'shared_device'
            when em.role in ('owned', 'anonymous') then 'email'
            when ph.role in ('owned', 'anonymous') then 'phone'
            when pt.role in ('owned', 'anonymous') then 'push_token'
            when c.role = 'public' then 'public_device'
            when coalesce(em.person_anchor, ph.person_anchor, pt.person_anchor) is not null
                then 'latest_account'
            else 'unidentified'
        end as resolved_by,
        case
            when e.account_id is not null then 'account:' || e.account_id
            when c.role in ('owned', 'anonymous') then c.person_anchor
            when c.role = 'shared' then 'account:' || s.account_id
            when em.role in ('owned', 'anonymous') then em.person_anchor
            when ph.role in ('owned', 'anonymous') then ph.person_anchor
            when pt.role in ('owned', 'anonymous') then pt.person_anchor
            when c.role = 'public' then c.person_anchor
            else coalesce(em.person_anchor, ph.person_anchor, pt.person_anchor)
        end as person_anchor
    from events as e
    left join clients as c on c.identifier_value = e.client_id
    left join emails as em on em.identifier_value = e.email
    left join phones as ph on ph.identifier_value = e.phone
    left join push_tokens as pt on pt.identifier_value = e.push_token
    left join shared_device_accounts as s on s.event_id = e.event_id

)

select
    event_id,
    {{ identity_uuid('person_anchor') }} as user_id,
    event_ts,
    client_id,
    push_token,
    device_type,
    resolved_by,
    event_type
from attributed
