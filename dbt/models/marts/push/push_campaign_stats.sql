{#- Campaign delivery and open rates at three grains, one row each:
      grain 'campaign'  campaign                  (run_id and send_day null)
      grain 'run'       campaign, run_id          (send_day null)
      grain 'day'       campaign, send_day (UTC)  (run_id null)
    Counts are ledger rows (a person, or a device of an all-devices campaign); rates are
    over the pushes sent: delivery_rate = delivered / sent, open_rate = opened / sent
    (null while nothing was sent). Skips are split by the planner's reasons; a reason it
    gains later lands in skipped_other until it gets its own column here. -#}

{#- which grouping set a row of `group by grouping sets ((campaign), (campaign, run_id),
    (campaign, send_day))` comes from; both aggregations below group that way -#}
{%- set grain -%}
case when grouping(run_id) = 0 then 'run' when grouping(send_day) = 0 then 'day'
            else 'campaign' end
{%- endset %}

with

outcomes as (

    select * from {{ ref('push_delivery_outcomes') }}

),

failure_reasons as (

    select
        {{ grain }} as grain,
        campaign, run_id, send_day, reason, count(*) as n
    from outcomes
    where status = 'failed'
    group by grouping sets (
        (campaign, reason), (campaign, run_id, reason), (campaign, send_day, reason)
    )

),

failures as (

    select grain, campaign, run_id, send_day, jsonb_object_agg(reason, n) as failed_by_reason
    from failure_reasons
    group by grain, campaign, run_id, send_day

),

stats as (

    select
        {{ grain }} as grain,
        campaign,
        run_id,
        send_day,
        count(*) as planned,
        count(*) filter (where status = 'planned') as waiting,
        count(*) filter (where status = 'sent') as sent,
        count(*) filter (where status = 'failed') as failed,
        count(*) filter (where status = 'skipped') as skipped,
        count(*) filter (where status = 'skipped' and reason = 'opted_out') as skipped_opted_out,
        count(*) filter (where status = 'skipped' and reason = 'no_valid_token')
            as skipped_no_valid_token,
        count(*) filter (where status = 'skipped' and reason = 'no_recommendation')
            as skipped_no_recommendation,
        count(*) filter (where status = 'skipped' and reason = 'quiet_hours')
            as skipped_quiet_hours,
        count(*) filter (where status = 'skipped' and reason = 'cap_day') as skipped_cap_day,
        count(*) filter (where status = 'skipped' and reason = 'cap_week') as skipped_cap_week,
        count(*) filter (where status = 'skipped' and reason = 'expired') as skipped_expired,
        count(*) filter (where status = 'skipped' and reason = 'purchased') as skipped_purchased,
        count(*) filter (
            where status = 'skipped' and reason not in (
                'opted_out', 'no_valid_token', 'no_recommendation', 'quiet_hours', 'cap_day',
                'cap_week', 'expired', 'purchased')
        ) as skipped_other,
        count(*) filter (where is_delivered) as delivered,
        count(*) filter (where is_opened) as opened,
        percentile_cont(0.5) within group (order by seconds_to_open)
            filter (where is_opened) as median_seconds_to_open,
        min(planned_at) as first_planned_at,
        max(sent_at) as last_sent_at
    from outcomes
    group by grouping sets ((campaign), (campaign, run_id), (campaign, send_day))

)

select
    s.grain || ':' || s.campaign || ':' || coalesce(s.run_id, '') || ':'
        || coalesce(s.send_day::text, '') as stats_key,
    s.grain,
    s.campaign,
    s.run_id,
    s.send_day,
    s.planned,
    s.waiting,
    s.sent,
    s.failed,
    s.skipped,
    s.skipped_opted_out,
    s.skipped_no_valid_token,
    s.skipped_no_recommendation,
    s.skipped_quiet_hours,
    s.skipped_cap_day,
    s.skipped_cap_week,
    s.skipped_expired,
    s.skipped_purchased,
    s.skipped_other,
    coalesce(f.failed_by_reason, '{}'::jsonb) as failed_by_reason,
    s.delivered,
    s.opened,
    s.delivered::double precision / nullif(s.sent, 0) as delivery_rate,
    s.opened::double precision / nullif(s.sent, 0) as open_rate,
    s.median_seconds_to_open,
    s.first_planned_at,
    s.last_sent_at
from stats as s
left join failures as f
    on f.grain = s.grain
    and f.campaign = s.campaign
    and f.run_id is not distinct from s.run_id
    and f.send_day is not distinct from s.send_day
