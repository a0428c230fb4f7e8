{#- Custom schemas are used as-is (`staging`, `intermediate`, `crm`), not prefixed with the
    target schema: the marts are the CRM's tables and other services query them by name. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
