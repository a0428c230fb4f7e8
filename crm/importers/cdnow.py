"""CDNOW transaction log (Fader & Hardie; purchases of 23,570 customers, 1997-1998) ->
`purchase_history` events.

Mapping (documented in docs/imports.md):
- one row = one past purchase; `user_id = "cdnow-<customer_id>"` (the ids are row numbers of a
  research data set, so they get a prefix that keeps them apart from any real shop's ids);
- `order_id = "cdnow-<customer_id>-<YYYYMMDD>-<n>"`, n counting a customer's rows on that day
  from 1 in file order (a customer can buy twice a day);
- the log has no products: one line item `{"product_id": "CDNOW-CD", "quantity":
  number_of_cds, "price": dollar_value / number_of_cds}`; `total_price` = dollar_value (USD,
  extra field `currency: "USD"`);
- `purchase_date` = the date; `timestamp` = that date at 00:00 UTC, not the import time, so a
  re-import has the same (event_id, timestamp) key and is stored once.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from crm.importers import ImportPlan, import_event_id

SOURCE = "import:cdnow"
PRODUCT_ID = "CDNOW-CD"


def read_cdnow(path: str | Path) -> pl.DataFrame:
    text = Path(path).read_text()
    rows = [line.split() for line in text.splitlines()]
    rows = [r for r in rows if r and r[0] != "customer_id"]  # header and blank lines
    return pl.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "date": [r[1] for r in rows],
            "number_of_cds": [int(r[2]) for r in rows],
            "dollar_value": [float(r[3]) for r in rows],
        }
    )


def cdnow_events(path: str | Path) -> ImportPlan:
    df = read_cdnow(path).with_columns(
        n=pl.int_range(1, pl.len() + 1).over("customer_id", "date"),
        day=pl.col("date").str.strptime(pl.Date, "%Y%m%d"),
    )
    events = []
    for cid, day_text, cds, value, n, day in df.iter_rows():
        order_id = f"cdnow-{cid}-{day_text}-{n}"
        item: dict = {"product_id": PRODUCT_ID, "quantity": cds}
        if cds > 0:
            item["price"] = round(value / cds, 4)
        iso = day.isoformat()
        events.append(
            {
                "event": "purchase_history",
                "timestamp": f"{iso}T00:00:00Z",
                "event_id": import_event_id(SOURCE, order_id),
                "user_id": f"cdnow-{cid}",
                "order_id": order_id,
                "order_items": [item],
                "total_price": value,
                "currency": "USD",
                "purchase_date": iso,
            }
        )
    return ImportPlan(SOURCE, events, rows_read=df.height)
