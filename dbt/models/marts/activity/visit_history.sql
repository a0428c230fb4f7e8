{#- Spec 9.2: a person's visits per page (user_id, page_url, visit_count, last_visit), merging
    imported history (visit_history events: a count up to its last_visit) with page views seen
    live. Live views at or before the imported last_visit are taken as already in the
    imported count, so a page is not counted twice; a re-import of the same page replaces
    the older one (the latest last_visit wins). -#}

with

event_person as (

    select event_id, user_id from {{ ref('int_event_person') }}

),

imported as (

    select distinct on (p.user_id, e.page_url)
        p.user_id, e.page_url, coalesce(e.visit_count, 0) as visit_count, e.last_visit
    from {{ ref('stg_events') }} as e
    join event_person as p using (event_id)
    where e.event_type = 'visit_history'
        and e.page_url is not null
        and p.user_id is not null
    order by p.user_id, e.page_url, e.last_visit desc nulls last, e.visit_count desc nulls last,
        e.event_ts desc, e.event_id

),

observed_views as (

    select p.user_id, e.page_url, e.event_ts
    from {{ ref('int_session_events') }} as e
    join event_person as p using (event_id)
    where e.event_type = 'page_view'
        and e.page_url is not null
        and p.user_id is not null

),

observed as (

    select
        o.user_id,
        o.page_url,
        count(*) as observed_visits,
        count(*) filter (where i.last_visit is null or o.event_ts > i.last_visit)
            as new_visits,
        min(o.event_ts) as first_visit,
        max(o.event_ts) as last_visit
    from observed_views as o
    left join imported as i using (user_id, page_url)
    group by o.user_id, o.page_url

),

final as (

    select
        user_id,
        page_url,
        coalesce(i.visit_count, 0) + coalesce(o.new_visits, 0) as visit_count,
        greatest(i.last_visit, o.last_visit) as last_visit,
        o.first_visit as first_observed_visit,
        i.visit_count as imported_visit_count,
        coalesce(o.observed_visits, 0) as observed_visit_count,
        case
            when i.user_id is not null and o.user_id is not null then 'both'
            when o.user_id is not null then 'observed'
            else 'imported'
        end as source
    from imported as i
    full join observed as o using (user_id, page_url)

)

select * from final
