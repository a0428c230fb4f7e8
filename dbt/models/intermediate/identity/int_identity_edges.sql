{#- Edges of the identity graph: two identifiers seen in the same event, with when and how
    often. Identifiers are keyed as '<type>:<value>' (type: account, client_id, email,
    phone, push_token) so values of different types never collide. Each pair once, in key
    order (identifier_a < identifier_b). -#}

with

signatures as (

    select * from {{ ref('int_identity_signatures') }}

),

identifiers as (

    select
        s.signature_no,
        i.identifier_type || ':' || i.identifier_value as identifier,
        i.identifier_type,
        s.n_events,
        s.first_seen_at,
        s.last_seen_at
    from signatures as s
    {{ signature_identifiers('s') }}

),

pairs as (

    select
        a.identifier as identifier_a,
        a.identifier_type as type_a,
        b.identifier as identifier_b,
        b.identifier_type as type_b,
        sum(a.n_events) as n_events,
        min(a.first_seen_at) as first_seen_at,
        max(a.last_seen_at) as last_seen_at
    from identifiers as a
    join identifiers as b
        on a.signature_no = b.signature_no and a.identifier < b.identifier
    group by a.identifier, a.identifier_type, b.identifier, b.identifier_type

)

select * from pairs
