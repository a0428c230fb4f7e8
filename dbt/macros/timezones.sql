{#- The shop's IANA zone (var shop_timezone; `crm transform` passes CRM_SHOP_TIMEZONE after
    checking it is a zone) as an SQL literal. -#}
{% macro shop_timezone() -%}
    '{{ var("shop_timezone") | replace("'", "''") }}'::text
{%- endmacro %}
