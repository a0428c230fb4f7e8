{#- Every non-null value lies in [min_value, max_value]: dbt_utils' accepted_range without
    downloading a package. -#}
{% test in_range(model, column_name, min_value, max_value) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} < {{ min_value }} or {{ column_name }} > {{ max_value }}
{% endtest %}
