{#- Which person every identifier belongs to.

    1. Anonymous identifiers (never seen with an account) form connected components over
       the edges between them: label propagation until nothing changes
       (intermediate.connected_components, macros/connected_components.sql).
    2. A component joins an account when one of its identifiers was seen together with an
       identifier owned by exactly one account (a guest checkout with the e-mail of an
       account, a web-push token of a logged-in phone...). If several accounts are in reach,
       it joins the first one linked: two accounts are never merged.
    3. Everything else follows its role (int_identifiers): owned -> its account; moved /
       contested / overloaded -> the latest account, without linking anyone; a public device
       is its own anonymous person; a shared device has no single person (its events are
       split by who was logged in, int_event_person).

    person_anchor is the identifier a person is named after: its account, else its first
    ClientID; user_id is a UUID derived from it, so rebuilds give the same ids. -#}

with

identifiers as (

    select * from {{ ref('int_identifiers') }}

),

edges as (

    select * from {{ ref('int_identity_edges') }}

),

anonymous as (

    select identifier from identifiers where role = 'anonymous'

),

anonymous_edges as (

    select e.identifier_a, e.identifier_b
    from edges as e
    join anonymous as a on a.identifier = e.identifier_a
    join anonymous as b on b.identifier = e.identifier_b

),

components as (

    select cc.node as identifier, cc.component
    from intermediate.connected_components(
        array(select identifier from anonymous),
        array(select identifier_a from anonymous_edges),
        array(select identifier_b from anonymous_edges)
    ) as cc

),

attachments as (

    -- an anonymous identifier seen with an identifier that one account owns
    select c.component, o.first_account_id as account_id, e.first_seen_at as linked_at
    from edges as e
    join components as c on c.identifier = e.identifier_a
    join identifiers as o on o.identifier = e.identifier_b and o.role = 'owned'
    union all
    select c.component, o.first_account_id, e.first_seen_at
    from edges as e
    join components as c on c.identifier = e.identifier_b
    join identifiers as o on o.identifier = e.identifier_a and o.role = 'owned'

),

component_accounts as (

    select
        component,
        (array_agg(account_id order by linked_at, account_id))[1] as account_id,
        min(linked_at) as linked_at,
        count(distinct account_id) as n_candidate_accounts
    from attachments
    group by component

),

component_anchors as (

    -- an anonymous person is named after its first ClientID (else its first identifier)
    select distinct on (c.component)
        c.component,
        i.identifier as anchor
    from components as c
    join identifiers as i on i.identifier = c.identifier
    order by c.component, (i.identifier_type <> 'client_id'), i.first_seen_at, i.identifier

),

resolved as (

    select
        i.identifier,
        i.identifier_type,
        i.identifier_value,
        i.role,
        i.device_type,
        i.n_events,
        i.n_logins,
        i.n_logouts,
        i.first_seen_at,
        i.last_seen_at,
        i.n_accounts,
        i.n_devices,
        i.n_strangers,
        i.first_account_id,
        i.latest_account_id,
        c.component,
        ca.n_candidate_accounts,
        case i.role
            when 'account' then i.identifier
            when 'owned' then 'account:' || i.first_account_id
            when 'moved' then 'account:' || i.latest_account_id
            when 'contested' then 'account:' || i.latest_account_id
            when 'overloaded' then 'account:' || i.latest_account_id
            when 'public' then i.identifier
            -- a shared device's anonymous events after a logout are its own visitor's
            when 'shared' then i.identifier
            when 'anonymous' then coalesce('account:' || ca.account_id, an.anchor)
        end as person_anchor,
        -- when it joined the person it belongs to now (null: it always belonged there)
        case
            when i.role = 'owned' then i.first_account_seen_at
            when i.role = 'anonymous' and ca.account_id is not null then ca.linked_at
        end as linked_at
    from identifiers as i
    left join components as c on c.identifier = i.identifier
    left join component_accounts as ca on ca.component = c.component
    left join component_anchors as an on an.component = c.component

)

select
    *,
    {{ identity_uuid('person_anchor') }} as user_id
from resolved
