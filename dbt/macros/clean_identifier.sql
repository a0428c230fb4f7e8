{#- Trim, empty -> null, and values on the blocklist seed (compared case-insensitively) or
    made only of zeros and dashes (all-zero UUIDs, "0", "-1"-like placeholders) -> null.
    The literal 'null' is checked here, not in the seed: dbt reads a seed's "null" as NULL.
    A junk identifier must be treated as absent: "undefined" would otherwise be one giant
    person made of every broken tracker. -#}
{% macro clean_identifier(column, identifier_type) -%}
    case
        when nullif(btrim({{ column }}), '') is null then null
        when btrim({{ column }}) ~ '^[-0]+$' then null
        when lower(btrim({{ column }})) = 'null' then null
        when lower(btrim({{ column }})) in (
            select value from blocklist
            where identifier_type in ('any', '{{ identifier_type }}')
        ) then null
        else btrim({{ column }})
    end
{%- endmacro %}

{#- Typed extraction from the payload that never fails a build on a bad value: the
    collector validated types already, this is the second line of defence. -#}
{% macro json_number(field) -%}
    case when jsonb_typeof(payload -> '{{ field }}') = 'number'
        then (payload ->> '{{ field }}')::numeric end
{%- endmacro %}

{% macro json_text(field) -%}
    nullif(btrim(payload ->> '{{ field }}'), '')
{%- endmacro %}
