{#- Every identifier with its role in the graph. The role is decided only by which accounts
    the identifier was seen with in the same event (the shop's account id is the one truth
    about who someone is):
      account     the shop's account id: one person each, never merged with another
      owned       seen with exactly one account: belongs to it
      anonymous   never seen with an account: joins others through the graph
      shared      a device seen with 2..max_accounts_per_device accounts (family): links
                  nothing, its events go to whoever is logged in (int_event_person)
      public      a device seen with more accounts (kiosk), or with more than
                  max_strangers_per_device e-mails (or phones) none of its accounts was
                  seen with (strangers' guest checkouts: a kiosk only one shopper ever
                  logged in to): links nothing at all; its anonymous events are the
                  device's own anonymous visitor's
      moved       a push token seen with 2+ accounts (reinstall, phone sold): belongs to
                  the latest account, links nothing
      contested   an e-mail / phone seen with 2+ accounts: belongs to the latest, links nothing
      overloaded  an e-mail / phone / push token seen on more than max_devices_per_identifier
                  devices: links nothing (a shop assistant's e-mail on customers' orders) -#}

with

signatures as (

    select * from {{ ref('int_identity_signatures') }}

),

edges as (

    select * from {{ ref('int_identity_edges') }}

),

observed as (

    select
        i.identifier_type || ':' || i.identifier_value as identifier,
        i.identifier_type,
        i.identifier_value,
        s.device_type,
        s.n_events,
        s.n_logins,
        s.n_logouts,
        s.first_seen_at,
        s.last_seen_at
    from signatures as s
    {{ signature_identifiers('s') }}

),

identifiers as (

    select
        identifier,
        identifier_type,
        identifier_value,
        sum(n_events) as n_events,
        sum(n_logins) as n_logins,
        sum(n_logouts) as n_logouts,
        min(first_seen_at) as first_seen_at,
        max(last_seen_at) as last_seen_at,
        -- the device type it reported most recently
        (array_agg(device_type order by last_seen_at desc)
            filter (where device_type is not null))[1] as device_type
    from observed
    group by identifier, identifier_type, identifier_value

),

neighbours as (

    -- both directions of every edge
    select identifier_a as identifier, type_a as identifier_type, identifier_b as neighbour,
        type_b as neighbour_type, first_seen_at, last_seen_at
    from edges
    union all
    select identifier_b, type_b, identifier_a, type_a, first_seen_at, last_seen_at
    from edges

),

device_contacts as (

    -- e-mails and phones typed on a device
    select identifier as device, neighbour as contact, neighbour_type as contact_type
    from neighbours
    where identifier_type = 'client_id' and neighbour_type in ('email', 'phone')

),

identifier_accounts as (

    select identifier, neighbour as account
    from neighbours
    where neighbour_type = 'account'

),

stranger_stats as (

    -- e-mails / phones on a device that none of the device's accounts was ever seen with:
    -- other people's guest checkouts. A personal device carries its owner's one or two; a
    -- kiosk those of every shopper who checked out there without logging in
    select
        dc.device as identifier,
        greatest(
            count(*) filter (where dc.contact_type = 'email'),
            count(*) filter (where dc.contact_type = 'phone')
        ) as n_strangers
    from device_contacts as dc
    where not exists (
        select 1
        from identifier_accounts as da
        join identifier_accounts as ca on ca.account = da.account
        where da.identifier = dc.device and ca.identifier = dc.contact
    )
    group by dc.device

),

account_stats as (

    select
        identifier,
        count(*) as n_accounts,
        -- the account it was first seen with, and when: a shared device's anonymous
        -- events before any login belong to the first account that logs in on it
        (array_agg(substr(neighbour, 9) order by first_seen_at, neighbour))[1] as first_account_id,
        min(first_seen_at) as first_account_seen_at,
        (array_agg(substr(neighbour, 9) order by last_seen_at desc, neighbour))[1]
            as latest_account_id
    from neighbours
    where neighbour_type = 'account'
    group by identifier

),

device_stats as (

    select identifier, count(*) as n_devices
    from neighbours
    where neighbour_type = 'client_id'
    group by identifier

),

roles as (

    select
        i.*,
        coalesce(a.n_accounts, 0) as n_accounts,
        coalesce(d.n_devices, 0) as n_devices,
        coalesce(st.n_strangers, 0) as n_strangers,
        a.first_account_id,
        a.first_account_seen_at,
        a.latest_account_id,
        case
            when i.identifier_type = 'account' then 'account'
            when i.identifier_type = 'client_id'
                and a.n_accounts > {{ var('max_accounts_per_device') }} then 'public'
            -- whatever its accounts, a device many strangers typed their e-mail or phone on
            -- is public: nobody's own device, even if only one shopper ever logged in there
            when i.identifier_type = 'client_id'
                and st.n_strangers > {{ var('max_strangers_per_device') }} then 'public'
            when i.identifier_type = 'client_id' and a.n_accounts >= 2 then 'shared'
            when i.identifier_type <> 'client_id'
                and d.n_devices > {{ var('max_devices_per_identifier') }} then 'overloaded'
            when i.identifier_type = 'push_token' and a.n_accounts >= 2 then 'moved'
            when a.n_accounts >= 2 then 'contested'
            when a.n_accounts = 1 then 'owned'
            else 'anonymous'
        end as role
    from identifiers as i
    left join account_stats as a on a.identifier = i.identifier
    left join device_stats as d on d.identifier = i.identifier
    left join stranger_stats as st on st.identifier = i.identifier

)

select * from roles
