{#- When anonymous visitors merged, replayed in time order (Kruskal's union-find over the
    anonymous part of the identity graph, edges taken by the time they were first seen).

    intermediate.anonymous_merges(nodes, edge_a, edge_b, edge_at) takes the nodes in anchor
    order (the order a person is named after: first ClientID first, see
    int_identity_graph) and returns a row (node, merged_into, merged_at) for every node that
    was the anchor (the id) of a group until, at merged_at, an edge joined its group to a
    group with an earlier anchor: from then on the group is named after merged_into. That is
    the time each vanished anonymous id stopped being a person (crm.user_id_history). -#}
{% macro create_anonymous_merges_function() %}
create schema if not exists intermediate;
create or replace function intermediate.anonymous_merges(
    nodes text[], edge_a text[], edge_b text[], edge_at timestamptz[]
)
returns table (node text, merged_into text, merged_at timestamptz)
language plpgsql
as $fn$
declare
    -- parent[i]: union-find forest over node positions; a set's anchor is its smallest
    -- position, kept at its root
    parent integer[] := array(select g from generate_series(1, coalesce(cardinality(nodes), 0)) as g);
    anchor integer[] := parent;
    e record;
    ra integer;
    rb integer;
    winner integer;
    loser integer;
begin
    for e in
        select ia.i::integer as a, ib.i::integer as b, x.at
        from unnest(edge_a, edge_b, edge_at) as x(a, b, at)
        join unnest(nodes) with ordinality as ia(n, i) on ia.n = x.a
        join unnest(nodes) with ordinality as ib(n, i) on ib.n = x.b
        order by x.at, ia.i, ib.i
    loop
        ra := e.a;
        while parent[ra] <> ra loop  -- path halving keeps the trees flat
            parent[ra] := parent[parent[ra]];
            ra := parent[ra];
        end loop;
        rb := e.b;
        while parent[rb] <> rb loop
            parent[rb] := parent[parent[rb]];
            rb := parent[rb];
        end loop;
        continue when ra = rb;
        if anchor[ra] < anchor[rb] then
            winner := ra;
            loser := rb;
        else
            winner := rb;
            loser := ra;
        end if;
        node := nodes[anchor[loser]];
        merged_into := nodes[anchor[winner]];
        merged_at := e.at;
        return next;
        parent[loser] := winner;
    end loop;
end;
$fn$;
{% endmacro %}
