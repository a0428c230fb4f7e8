{#- Connected components by label propagation until nothing changes (the approach of
    Splink's connected_components and rudderlabs' dbt-id-stitching, but iterated to
    convergence inside the database instead of a fixed number of dbt passes).

    intermediate.connected_components(nodes, edge_a, edge_b) returns (node, component) where
    component is the smallest node of the node's component. Each round every node takes the
    smallest label among its neighbours, then adopts its label's label (pointer jumping), so
    a chain of n nodes converges in O(log n) rounds, not n. Arrays in, rows out: the model
    calling it stays a plain SELECT (and dbt unit tests can feed it fixtures). -#}
{% macro create_connected_components_function() %}
create schema if not exists intermediate;
create or replace function intermediate.connected_components(
    nodes text[], edge_a text[], edge_b text[], max_rounds integer default 1000
)
returns table (node text, component text)
language plpgsql
as $fn$
declare
    changed bigint;
    rounds integer := 0;
begin
    drop table if exists pg_temp.cc_edges;
    drop table if exists pg_temp.cc_labels;
    create temp table cc_edges on commit drop as
        select e.a, e.b from unnest(edge_a, edge_b) as e(a, b)
        where e.a is not null and e.b is not null and e.a <> e.b
        union
        select e.b, e.a from unnest(edge_a, edge_b) as e(a, b)
        where e.a is not null and e.b is not null and e.a <> e.b;
    create temp table cc_labels on commit drop as
        select distinct n.node, n.node as label
        from (
            select unnest(nodes) as node
            union all select a from cc_edges
        ) as n
        where n.node is not null;
    alter table cc_labels add primary key (node);
    analyze cc_edges;
    analyze cc_labels;
    loop
        rounds := rounds + 1;
        if rounds > max_rounds then
            raise exception 'connected_components: no convergence after % rounds', max_rounds;
        end if;
        update cc_labels as l
        set label = m.label
        from (
            select e.a as node, min(n.label) as label
            from cc_edges as e
            join cc_labels as n on n.node = e.b
            group by e.a
        ) as m
        where m.node = l.node and m.label < l.label;
        get diagnostics changed = row_count;
        exit when changed = 0;
        -- Pointer jumping: a label is a node of the same component, so its label is too.
        update cc_labels as l
        set label = p.label
        from cc_labels as p
        where p.node = l.label and p.label < l.label;
    end loop;
    raise log 'connected_components: % nodes converged in % rounds',
        (select count(*) from cc_labels), rounds;
    return query select l.node, l.label from cc_labels as l;
end;
$fn$;
{% endmacro %}
