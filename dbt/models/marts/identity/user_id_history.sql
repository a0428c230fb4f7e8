{#- Old user_id -> new user_id, and when: an anonymous visitor's id (derived from its first
    ClientID) is replaced by its account's id once the visitor is recognised. Derived from
    the data alone (the time each device or anonymous group first met its account), so it
    survives full refreshes; campaign ledgers and model outputs keyed by an old id follow it
    here. -#}

with

graph as (

    select * from {{ ref('int_identity_graph') }}

),

users as (

    select user_id from {{ ref('users') }}

),

devices_linked as (

    -- a device that was used before its account first appeared on it
    select
        {{ identity_uuid('identifier') }} as old_user_id,
        user_id as new_user_id,
        linked_at as changed_at,
        identifier as old_anchor,
        person_anchor as new_anchor,
        'device_logged_in' as reason
    from graph
    where role = 'owned' and identifier_type = 'client_id' and first_seen_at < linked_at

),

anonymous_groups_linked as (

    -- an anonymous person (its first ClientID) that met an account through an e-mail,
    -- phone or push token
    select distinct on (g.component)
        {{ identity_uuid('a.identifier') }} as old_user_id,
        g.user_id as new_user_id,
        g.linked_at as changed_at,
        a.identifier as old_anchor,
        g.person_anchor as new_anchor,
        'identifier_matched_account' as reason
    from graph as g
    join graph as a on a.component = g.component and a.identifier_type = 'client_id'
    where g.role = 'anonymous' and g.linked_at is not null and a.first_seen_at < g.linked_at
    order by g.component, a.first_seen_at, a.identifier

),

changes as (

    select * from devices_linked
    union all
    select * from anonymous_groups_linked

),

final as (

    -- an old id that is a live user again (e.g. a device that became public) is no change
    select distinct on (c.old_user_id) c.*
    from changes as c
    where c.old_user_id <> c.new_user_id
        and not exists (select 1 from users as u where u.user_id = c.old_user_id)
    order by c.old_user_id, c.changed_at

)

select * from final
