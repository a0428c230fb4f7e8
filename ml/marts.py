"""The model inputs, read from the dbt marts: one query per input, named for what it holds."""

from __future__ import annotations

import polars as pl

from ml.warehouse import read, table_exists

# One row per person in crm.users (everyone gets a segment), with behaviour from
# crm.user_features, the last cart or checkout activity and the weekend share of sessions.
PEOPLE_SQL = """
with ref as (
    select coalesce(max(as_of), now()) as as_of from crm.user_features
),
last_cart as (
    select user_id, max(event_ts) as last_cart_at
    from intermediate.int_event_person
    where event_type in ('add_to_cart', 'checkout_start', 'checkout_abandonment')
      and user_id is not null
    group by user_id
),
weekend as (
    select user_id,
           avg(case when extract(isodow from started_at) >= 6 then 1.0 else 0.0 end)
               ::float8 as weekend_share
    from crm.fct_sessions
    where user_id is not null
    group by user_id
)
select
    u.user_id::text as user_id,
    (extract(epoch from ref.as_of - u.first_seen_at) / 86400)::float8 as days_since_first_seen,
    coalesce(f.orders, 0)::bigint as orders,
    f.days_since_last_order::float8 as days_since_last_order,
    coalesce(f.days_since_last_visit,
             extract(epoch from ref.as_of - u.last_seen_at) / 86400)::float8
        as days_since_last_visit,
    coalesce(f.share_mobile, 0)::float8 as share_mobile,
    coalesce(f.monetary, 0)::float8 as monetary,
    coalesce(f.sessions, 0)::float8 as sessions,
    coalesce(f.push_open_rate, 0)::float8 as push_open_rate,
    coalesce(w.weekend_share, 0)::float8 as weekend_share,
    case when c.last_cart_at > coalesce(f.last_order_at, '-infinity'::timestamptz)
         then (extract(epoch from ref.as_of - c.last_cart_at) / 86400)::float8 end
        as days_since_last_cart
from crm.users u
cross join ref
left join crm.user_features f on f.user_id = u.user_id
left join last_cart c on c.user_id = u.user_id
left join weekend w on w.user_id = u.user_id
order by u.user_id
"""


class MartsMissing(RuntimeError):
    """The marts the models read do not exist yet: run `crm transform` first."""


def people(database_url: str) -> pl.DataFrame:
    for needed in ("crm.users", "crm.user_features", "crm.fct_sessions",
                   "intermediate.int_event_person"):
        if not table_exists(database_url, needed):
            raise MartsMissing(f"{needed} does not exist: run `crm transform` first")
    return read(database_url, PEOPLE_SQL)


ORDERS_SQL = """
select user_id::text as person_id,
       coalesce(purchased_at, purchase_date::timestamptz) as ordered_at,
       total_price::float8 as amount
from crm.purchase_history
where user_id is not null and coalesce(purchased_at, purchase_date::timestamptz) is not null
order by 2
"""


def orders(database_url: str) -> pl.DataFrame:
    """Every order of an identified person: person_id, ordered_at, amount."""
    if not table_exists(database_url, "crm.purchase_history"):
        raise MartsMissing("crm.purchase_history does not exist: run `crm transform` first")
    return read(database_url, ORDERS_SQL)


def as_of(database_url: str):
    """The marts' own "now" (the newest event received), so a rebuild gives the same scores."""
    frame = read(database_url, "select coalesce(max(as_of), now()) as as_of "
                               "from crm.user_features")
    return frame["as_of"][0]


# push_received is the shop's send reaching the device, not the person being around: counted
# as activity it would teach the model the shop's own send hour (bench/send_time.py, too,
# leaves it out).
SEND_EVENTS_SQL = """
select user_id::text as person_id, event_ts as ts,
       case when event_type = 'push_opened' then 'push_opened' else 'activity' end as kind
from intermediate.int_event_person
where user_id is not null and event_type <> 'push_received'
"""
ZONES_SQL = "select user_id::text as person_id, timezone from crm.users"
TOKENS_SQL = """
select user_id::text as person_id, push_token, device_type,
       coalesce(last_used_at, created_at) as last_seen, is_valid
from crm.push_tokens
where user_id is not null
"""


def send_events(database_url: str) -> pl.DataFrame:
    """person_id, ts, kind ('push_opened' or 'activity') for every identified event."""
    return read(database_url, SEND_EVENTS_SQL)


def zones(database_url: str) -> pl.DataFrame:
    """person_id, timezone: each person's one zone, resolved by the marts."""
    return read(database_url, ZONES_SQL)


def tokens(database_url: str) -> pl.DataFrame:
    return read(database_url, TOKENS_SQL)


INTERACTIONS_SQL = """
select p.user_id::text as person_id, s.product_id,
       case p.event_type when 'product_view' then 'view' else 'cart' end as kind,
       p.event_ts as ts
from intermediate.int_event_person p
join staging.stg_events s on s.event_id = p.event_id
where p.user_id is not null and s.product_id is not null
  and p.event_type in ('product_view', 'add_to_cart')
union all
select h.user_id::text, item ->> 'product_id', 'purchase',
       coalesce(h.purchased_at, h.purchase_date::timestamptz)
from crm.purchase_history h
cross join lateral jsonb_array_elements(
    case when jsonb_typeof(h.order_items) = 'array' then h.order_items else '[]' end) item
where h.user_id is not null and item ->> 'product_id' is not null
  and coalesce(h.purchased_at, h.purchase_date::timestamptz) is not null
"""
PRODUCTS_SQL = """
select product_id, product_name, category, price::float8 as price from crm.dim_products
"""
DEVICES_SQL = """
select user_id::text as person_id,
       case when coalesce(share_ios, 0) >= greatest(coalesce(share_android, 0),
                                                    coalesce(share_web, 0)) and share_ios > 0
                 then 'ios'
            when coalesce(share_android, 0) >= coalesce(share_web, 0) and share_android > 0
                 then 'android'
            else 'web' end as device
from crm.user_features
"""


def interactions(database_url: str) -> pl.DataFrame:
    """person_id, product_id, kind (view / cart / purchase), ts of identified people."""
    return read(database_url, INTERACTIONS_SQL)


def products(database_url: str) -> pl.DataFrame:
    return read(database_url, PRODUCTS_SQL)


def devices(database_url: str) -> pl.DataFrame:
    """person_id, device: each person's main device kind (ios, android or web)."""
    return read(database_url, DEVICES_SQL)
