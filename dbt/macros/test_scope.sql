{#- Data tests on the big event tables check only the rows the build just wrote, unless it
    is a full refresh. Such a test is configured with `where: "recent_rows"` (dbt_project.yml,
    per folder): on `dbt build --full-refresh` it reads the whole table; on an incremental
    build only
      - the rows stamped by the newest run (loaded_at / max_loaded_at: exact; stg_events,
        int_session_events, int_sessions), or
      - the rows received within lookback_days of the newest row (received_at: the window
        the incremental models re-read).
    Why that is enough: a row an incremental build did not write was checked when it was
    written, and event_id uniqueness across the whole table is also a unique index on
    stg_events, int_event_person and int_session_events. Any other `where` is applied as
    dbt does by default. -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if where != 'recent_rows' -%}
        {{ return(dbt.default__get_where_subquery(relation)) }}
    {%- endif -%}
    {%- if flags.FULL_REFRESH or not execute -%}
        {{ return(relation) }}
    {%- endif -%}
    {%- set names = adapter.get_columns_in_relation(relation) | map(attribute='name') | list -%}
    {%- if 'loaded_at' in names or 'max_loaded_at' in names -%}
        {%- set col = 'loaded_at' if 'loaded_at' in names else 'max_loaded_at' -%}
        {%- set cond = col ~ ' >= (select max(' ~ col ~ ') from ' ~ relation ~ ')' -%}
    {%- elif 'received_at' in names -%}
        {%- set cond = "received_at >= (select max(received_at) from " ~ relation ~ ")"
            ~ " - interval '" ~ (var('lookback_days') | int) ~ " days'" -%}
    {%- else -%}
        {{ exceptions.raise_compiler_error("where: recent_rows on " ~ relation
            ~ ", which has no loaded_at, max_loaded_at or received_at column") }}
    {%- endif -%}
    {{ return('(select * from ' ~ relation ~ ' where ' ~ cond ~ ') dbt_subquery') }}
{%- endmacro %}
