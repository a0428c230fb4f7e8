{#- int_event_person's post-hook: the resolution of every identifier (role, person, first
    account) as this run used it, in intermediate.int_event_person_state. The next
    incremental run diffs the new graph against it to find the events whose person may
    have changed. Runs in the model's transaction, so the table and its state never
    disagree. -#}
{% macro save_event_person_state() -%}
    {%- set state = this.schema ~ '.' ~ this.identifier ~ '_state' -%}
    drop table if exists {{ state }};
    create table {{ state }} as
        select identifier_type, identifier_value, role, person_anchor, first_account_id
        from {{ ref('int_identity_graph') }};
    alter table {{ state }} add primary key (identifier_type, identifier_value);
    comment on table {{ state }} is
        'Identifier resolutions int_event_person last used (its post-hook); not a model.'
{%- endmacro %}


{#- SET LOCAL: per-sort/hash memory for the identity models that join or sort a million
    events (var identity_work_mem, default 64MB), until the model's transaction commits. -#}
{% macro identity_work_mem() -%}
    set local work_mem = '{{ var("identity_work_mem", "64MB") }}'
{%- endmacro %}


{#- Incremental models find new rows by received_at: everything received after the newest
    row of `relation` minus `lookback_days` (rows commit out of order by the
    collector's flush delay), to be anti-joined on event_id. -#}
{% macro received_at_watermark(relation) -%}
    {{ timestamp_literal(
        "select coalesce(max(received_at) - interval '" ~ (var('lookback_days') | int)
        ~ " days', '-infinity'::timestamptz)::text from " ~ relation) }}
{%- endmacro %}


{#- The newest loaded_at (the stamp of the dbt run that wrote a row) of `relation`: rows of
    an upstream model stamped later are the ones written since `relation` last took any.
    -inf when the column is new (the first run after an upgrade reads everything once). -#}
{% macro loaded_at_watermark(relation, column='loaded_at') -%}
    {{ timestamp_literal(
        "select coalesce(max(" ~ column ~ "), '-infinity'::timestamptz)::text from "
        ~ relation) }}
{%- endmacro %}


{#- A watermark as a timestamptz literal computed now by `sql` (the model is compiled right
    before it runs), not a subquery: the planner knows how many rows are above it and picks
    index scans when they are few. -inf while dbt only parses. -#}
{% macro timestamp_literal(sql) -%}
    {%- if execute -%}
        '{{ run_query(sql).columns[0].values()[0] }}'::timestamptz
    {%- else -%}
        '-infinity'::timestamptz
    {%- endif -%}
{%- endmacro %}


{#- The stamp of the rows this dbt run writes (all models of one `dbt build` share it). -#}
{% macro run_loaded_at() -%}
    '{{ run_started_at.isoformat() }}'::timestamptz
{%- endmacro %}


{#- Post-hook: ANALYZE a freshly built table once (nothing has statistics right after a full
    build, and the estimates the incremental runs' plans rely on need them). Later runs
    skip it: the planner reads the newest received_at from the index anyway. -#}
{% macro analyze_if_new() -%}
    {%- if execute -%}
        {%- set sql -%}
            select count(*) from pg_stat_user_tables
            where relid = '{{ this }}'::regclass
                and last_analyze is null and last_autoanalyze is null
        {%- endset -%}
        {%- if run_query(sql).columns[0].values()[0] > 0 -%}
            analyze {{ this }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
