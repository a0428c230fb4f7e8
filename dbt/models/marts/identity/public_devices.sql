{#- Audit: public devices (kiosks, demo tablets): seen with more than max_accounts_per_device
    accounts, or with more than max_strangers_per_device e-mails (or phones) that none of
    its accounts was seen with. They link nothing: each account's events
    there stay that account's, the anonymous ones belong to the device's own anonymous
    visitor (user_id; null when the device has no anonymous events). -#}

with

graph as (

    select * from {{ ref('int_identity_graph') }}
    where role = 'public'

),

users as (

    select user_id from {{ ref('users') }}

),

final as (

    select
        g.identifier_value as client_id,
        g.device_type,
        g.n_accounts,
        g.n_strangers,
        g.n_logins,
        g.n_logouts,
        g.n_events,
        g.first_seen_at,
        g.last_seen_at,
        u.user_id
    from graph as g
    left join users as u on u.user_id = g.user_id

)

select * from final
