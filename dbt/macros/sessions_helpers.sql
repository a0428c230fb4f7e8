{#- Helpers of the sessions / histories / features models (models/intermediate/sessions,
    models/marts/activity). Vars read with defaults, so dbt_project.yml need not declare them:
      session_timeout_minutes (30)   inactivity that ends a session
      session_max_hours (24)         longer sessions are quarantined as runaways
      session_max_events (5000)      so are sessions with more events
      sessions_work_mem ('128MB')    per-sort memory for the sessionising queries -#}

{% macro sessions_timeout() -%}
    interval '{{ var("session_timeout_minutes", 30) | int }} minutes'
{%- endmacro %}


{#- SET LOCAL: lasts until the model's transaction commits, so other models sharing the
    connection keep the server default. -#}
{% macro sessions_work_mem() -%}
    set local work_mem = '{{ var("sessions_work_mem", "128MB") }}'
{%- endmacro %}


{#- Events that are not someone browsing: imports of past activity, CRM-side records, and a
    push merely delivered to a device (only opening it is an action). -#}
{% macro sessions_non_browsing_types() -%}
    ('purchase_history', 'visit_history', 'user_recommendation', 'push_received')
{%- endmacro %}
