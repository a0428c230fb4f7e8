{#- Old user_id -> new user_id, and when: an anonymous visitor's id (derived from its first
    ClientID) is replaced by its account's id once the visitor is recognised, and the id of
    an anonymous visitor merged into an earlier one by the earlier one's. Derived from
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

anonymous_edges as (

    select e.identifier_a, e.identifier_b, e.first_seen_at
    from {{ ref('int_identity_edges') }} as e
    join graph as a on a.identifier = e.identifier_a and a.role = 'anonymous'
    join graph as b on b.identifier = e.identifier_b and b.role = 'anonymous'

),

anonymous_visitors_merged as (

    -- two anonymous visitors became one (a shared e-mail, phone or token): the one named
    -- later loses its id at the first event that joined them, to the person the group is
    -- now (its first visitor's, or the account it met since)
    select
        {{ identity_uuid('m.node') }} as old_user_id,
        g.user_id as new_user_id,
        m.merged_at as changed_at,
        m.node as old_anchor,
        g.person_anchor as new_anchor,
        'anonymous_visitors_merged' as reason
    from intermediate.anonymous_merges(
        array(
            select identifier from graph where role = 'anonymous'
            order by (identifier_type <> 'client_id'), first_seen_at, identifier
        ),
        array(select identifier_a from anonymous_edges order by identifier_a, identifier_b),
        array(select identifier_b from anonymous_edges order by identifier_a, identifier_b),
        array(select first_seen_at from anonymous_edges order by identifier_a, identifier_b)
    ) as m
    join graph as g on g.identifier = m.node
    -- only an id that had events of its own before the merge was ever a person
    where g.first_seen_at < m.merged_at

),

changes as (

    select * from devices_linked
    union all
    select * from anonymous_groups_linked
    union all
    select * from anonymous_visitors_merged

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
