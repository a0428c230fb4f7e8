{#- One row per identifier of a signature (alias `sig`): the five identifier kinds that can
    link devices to a person, as `i.identifier_type` / `i.identifier_value`, absent ones
    dropped. The graph's edges and its identifier roles both start from this list. -#}
{% macro signature_identifiers(sig) -%}
    cross join lateral (
        values
            ('account', {{ sig }}.account_id),
            ('client_id', {{ sig }}.client_id),
            ('email', {{ sig }}.email),
            ('phone', {{ sig }}.phone),
            ('push_token', {{ sig }}.push_token)
    ) as i (identifier_type, identifier_value)
    where i.identifier_value is not null
{%- endmacro %}
