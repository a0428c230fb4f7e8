{#- A deterministic UUID from an anchor text such as 'account:123' or 'client:<ClientID>':
    the same data always gives the same id, so full rebuilds never renumber people and
    campaign ledgers keep pointing at the right row. (md5 is 128 bits: exactly a uuid.) -#}
{% macro identity_uuid(anchor_expr) -%}
    md5({{ anchor_expr }})::uuid
{%- endmacro %}
