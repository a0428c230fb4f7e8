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


{#- A coarse UTC offset (hours) from a position. Inside Russia's bounding box, longitude bands
    follow its (DST-free since 2014) zones: Kaliningrad +2, Moscow +3, Samara +4,
    Yekaterinburg +5, Omsk +6, Novosibirsk/Krasnoyarsk +7, Irkutsk +8, Yakutsk +9,
    Vladivostok +10, Magadan +11, Kamchatka +12. Elsewhere: solar time, round(lon / 15).
    Good to an hour for where the shop's customers live; a real tz lookup (PostGIS +
    timezone polygons) would be exact but is not worth a dependency for "active hours". -#}
{% macro sessions_utc_offset(lat, lon) -%}
    case
        when {{ lat }} is null or {{ lon }} is null then null
        when {{ lat }} between 41 and 82 and {{ lon }} between 19 and 180 then
            case
                when {{ lon }} < 22.5 then 2
                when {{ lon }} < 48.5 then 3
                when {{ lon }} < 57.5 then 4
                when {{ lon }} < 68.5 then 5
                when {{ lon }} < 78.0 then 6
                when {{ lon }} < 98.0 then 7
                when {{ lon }} < 113.0 then 8
                when {{ lon }} < 127.5 then 9
                when {{ lon }} < 142.0 then 10
                when {{ lon }} < 157.0 then 11
                else 12
            end
        else round({{ lon }} / 15.0)::integer
    end
{%- endmacro %}
