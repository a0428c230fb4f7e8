{#- The person behind every event: one row per stg_events.event_id.

    In order: the account the event carries; else its device, if the device belongs to one
    person; on a shared (family) device, the account logged in on it at that time (the
    latest event with an account before this one; before the first login, the first
    account that logs in on it; after a logout and before the next login, nobody's: the
    device's own anonymous visitor); else its e-mail, phone or push token; on a public device
    with nothing else, the device's own anonymous person. user_id is null only for an
    event without any usable identifier (e.g. a broken tracker's "undefined" ClientID).

    Incremental: the graph (int_identity_graph, tens of thousands of identifiers) is rebuilt
    on every run, and the resolution of every identifier it used last time is kept in
    intermediate.int_event_person_state (written by this model's post-hook, in the same
    transaction). A run recomputes, and delete+inserts on event_id, only
      - events new in stg_events (stamped by a run after the newest stamp here, not
        stored yet with that received_at: a copy received earlier than the stored one
        replaces it),
      - events without an account carrying an identifier whose role, person or first
        account changed since the last run (appeared or vanished too),
      - every event of a shared device that got a new event or whose own resolution changed
        (its login timeline is replayed whole),
    which is exactly the set of events whose row a full rebuild could change: an event with
    an account is always that account's; an event on a shared device depends only on the
    device's timeline and first account; any other event only on its identifiers'
    resolutions. So the table equals a full rebuild after any sequence of runs (tested). -#}
{{
    config(
        materialized='incremental',
        unique_key='event_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        indexes=[
            {'columns': ['event_id'], 'unique': True},
            {'columns': ['received_at']},
            {'columns': ['client_id']},
            {'columns': ['email']},
            {'columns': ['phone']},
            {'columns': ['push_token']},
            {'columns': ['staged_at']},
        ],
        pre_hook=["{{ identity_work_mem() }}"],
        post_hook=["{{ save_event_person_state() }}", "{{ analyze_if_new() }}"],
    )
}}

{#- Incremental only when the last run left what the diff needs (the state table and the
    received_at / account_id / email / phone columns); otherwise (the first run after an
    upgrade) every event is recomputed once. -#}
{%- set state = none -%}
{%- set incremental = false -%}
{%- if execute and this is not none and is_incremental() -%}
    {%- set state = adapter.get_relation(
            database=this.database, schema=this.schema,
            identifier=this.identifier ~ '_state') -%}
    {%- set stored = adapter.get_columns_in_relation(this) | map(attribute='name') | list -%}
    {%- set incremental = state is not none and 'received_at' in stored
            and 'account_id' in stored and 'email' in stored and 'phone' in stored
            and 'staged_at' in stored -%}
{%- endif -%}
{%- if incremental -%}
    {#- The watermark as a literal, so the planner sees how many rows are above it: the
        newest stg_events stamp (loaded_at) taken here. Exact, where a received_at window
        re-read every event received in the last `lookback_days` (after a backfill, all
        of history). -#}
    {%- set since = loaded_at_watermark(this, 'staged_at') -%}
{%- endif %}

with

graph as (

    select identifier_type, identifier_value, role, person_anchor, first_account_id
    from {{ ref('int_identity_graph') }}

),

clients as (select * from graph where identifier_type = 'client_id'),
emails as (select * from graph where identifier_type = 'email'),
phones as (select * from graph where identifier_type = 'phone'),
push_tokens as (select * from graph where identifier_type = 'push_token'),

{% if incremental %}

new_events as (

    -- rows stg_events stored since the last run, with the device of the copy they replace
    select s.event_id, s.event_type, s.event_ts, s.received_at, s.user_id as account_id,
        s.client_id, s.email, s.phone, s.push_token, s.device_type,
        s.loaded_at as staged_at, t.client_id as replaced_client_id
    from {{ ref('stg_events') }} as s
    left join {{ this }} as t on t.event_id = s.event_id
    where s.loaded_at > {{ since }}
        and (t.event_id is null or t.received_at <> s.received_at)

),

changed as (

    -- identifiers whose resolution is not what the last run used
    select
        coalesce(g.identifier_type, p.identifier_type) as identifier_type,
        coalesce(g.identifier_value, p.identifier_value) as identifier_value
    from graph as g
    full join {{ state }} as p
        on p.identifier_type = g.identifier_type and p.identifier_value = g.identifier_value
    where (g.role, g.person_anchor, g.first_account_id)
        is distinct from (p.role, p.person_anchor, p.first_account_id)

),

replayed_devices as (

    -- shared devices whose login timeline is replayed whole: a new event on them (or one
    -- that left them: a replaced copy), or a change of the device's own resolution
    select c.identifier_value as client_id
    from clients as c
    where c.role = 'shared'
        and (
            c.identifier_value in (select client_id from new_events)
            or c.identifier_value in (select replaced_client_id from new_events)
            or c.identifier_value in (
                select identifier_value from changed where identifier_type = 'client_id')
        )

),

{#- Stored events whose person may change, looked up through this table's indexes (the
    arrays are tiny next to the table). This table keeps every input of the rules, so they
    are recomputed without going back to stg_events. An event with an account never
    changes; an event on a shared device follows only the device's timeline. -#}
{%- set not_shared -%}
    t.account_id is null
    and (t.client_id is null or t.client_id not in (
        select identifier_value from clients where role = 'shared'))
{%- endset %}

stored_affected as (

    select t.* from {{ this }} as t
    where t.client_id = any(array(select client_id from replayed_devices))
    {%- for column in ['client_id', 'email', 'phone', 'push_token'] %}
    union
    select t.* from {{ this }} as t
    where t.{{ column }} = any(array(
            select identifier_value from changed where identifier_type = '{{ column }}'))
        and {{ not_shared }}
    {%- endfor %}

),

events as (

    select event_id, event_type, event_ts, received_at, account_id, client_id, email, phone,
        push_token, device_type, staged_at
    from new_events
    union all
    select event_id, event_type, event_ts, received_at, account_id, client_id, email, phone,
        push_token, device_type, staged_at
    from stored_affected
    where event_id not in (select event_id from new_events)

),

{% else %}

events as (

    select event_id, event_type, event_ts, received_at, user_id as account_id, client_id,
        email, phone, push_token, device_type, loaded_at as staged_at
    from {{ ref('stg_events') }}

),

{% endif %}

shared_device_events as (

    -- every event of the shared devices among `events` (incremental runs bring whole
    -- timelines of the devices they touch)
    select
        e.event_id,
        e.client_id,
        e.event_ts,
        e.event_type,
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

shared_device_logins as (

    select
        *,
        coalesce(
            first_value(account_id) over (
                partition by client_id, login_no order by event_ts, event_id
            ),
            first_account_id
        ) as logged_in_account_id,
        -- a logout since the latest login: whoever browses now is not that account
        count(*) filter (where event_type = 'user_logout') over (
            partition by client_id, login_no order by event_ts, event_id
            rows between unbounded preceding and current row
        ) as n_logouts_since_login
    from shared_device_events

),

shared_device_accounts as (

    -- anonymous events after a logout and before the next login stay with the device's
    -- own anonymous visitor (account_id null): several people use this device
    select
        event_id,
        case when n_logouts_since_login = 0 then logged_in_account_id end as account_id
    from shared_device_logins

),

attributed as (

    select
        e.event_id,
        e.event_type,
        e.event_ts,
        e.received_at,
        e.account_id,
        e.client_id,
        e.email,
        e.phone,
        e.push_token,
        e.device_type,
        e.staged_at,
        case
            when e.account_id is not null then 'account'
            when c.role in ('owned', 'anonymous') then 'client_id'
            when c.role = 'shared' and s.account_id is not null then 'shared_device'
            when c.role = 'shared' then 'shared_device_logged_out'
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
            when c.role = 'shared' then coalesce('account:' || s.account_id, c.person_anchor)
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
    event_type,
    -- the rules' other inputs, kept so incremental runs can recompute a stored event
    -- without going back to stg_events (columns are only ever appended)
    received_at,
    account_id,
    email,
    phone,
    -- the stg_events stamp (loaded_at) of the row this one was built from: the next run
    -- reads the stg_events rows stamped later
    staged_at
from attributed
