{#- No two rows share the same (column_a, column_b): dbt_utils' unique_combination_of_columns
    for two columns, without downloading a package. -#}
{% test unique_pair(model, column_a, column_b) %}
select {{ column_a }}, {{ column_b }}, count(*) as n
from {{ model }}
group by {{ column_a }}, {{ column_b }}
having count(*) > 1
{% endtest %}
