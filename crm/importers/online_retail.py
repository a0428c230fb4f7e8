"""UCI Online Retail (a UK gift shop's invoice lines, 2010-2011) -> `order_complete` events.

Mapping (documented in docs/imports.md):
- one invoice = one `order_complete`; `order_id` = InvoiceNo; its lines become `order_items`
  (`product_id` = StockCode, `product_name` = Description, `quantity`, `price` = UnitPrice);
  `total_price` = sum of quantity x price; extra fields `currency: "GBP"` and
  `shipping_address: {"country": Country}`;
- `timestamp`: InvoiceDate is shop-local (Europe/London, with daylight saving) -> UTC;
- a customer (CustomerID) is `user_id`; a guest (`NA`) has no account, so the invoice becomes
  an anonymous client `client_id = "online-retail-guest-<InvoiceNo>"` (nothing links two guest
  invoices, so each is its own client);
- cancellations (InvoiceNo starting with `C`, negative quantities) are not orders and the
  tracking plan has no cancellation event: they are skipped and counted, never sent as orders;
- other lines with quantity <= 0 (stock write-offs: blank descriptions, price 0) are skipped
  and counted; price-0 lines with a positive quantity (free items) are kept.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from crm.importers import ImportPlan, import_event_id

SOURCE = "import:online-retail"
SHOP_TZ = "Europe/London"


def read_online_retail(path: str | Path) -> pl.DataFrame:
    return pl.read_csv(
        path,
        null_values=["NA"],
        schema_overrides={"InvoiceNo": pl.String, "StockCode": pl.String,
                          "CustomerID": pl.String, "Description": pl.String},
        infer_schema_length=10_000,
    )


def online_retail_events(path: str | Path) -> ImportPlan:
    df = read_online_retail(path)
    cancelled = pl.col("InvoiceNo").str.starts_with("C")
    write_off = ~cancelled & (pl.col("Quantity") <= 0)
    skipped = {
        "cancellation_lines": df.filter(cancelled).height,
        "cancelled_invoices": df.filter(cancelled)["InvoiceNo"].n_unique(),
        "write_off_lines": df.filter(write_off).height,
    }
    lines = df.filter(~cancelled & ~write_off).with_columns(
        ts=pl.col("InvoiceDate").str.strptime(pl.Datetime("us"), "%m/%d/%Y %H:%M")
        .dt.replace_time_zone(SHOP_TZ, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC"),
        # CustomerID may be read as "12488" or "12488.0" depending on the export.
        customer=pl.col("CustomerID").str.replace(r"\.0$", ""),
    )
    orders = (
        lines.group_by("InvoiceNo", maintain_order=True)
        .agg(
            ts=pl.col("ts").min(),
            customer=pl.col("customer").first(),
            country=pl.col("Country").first(),
            order_items=pl.struct(
                product_id="StockCode", product_name="Description", quantity="Quantity",
                price="UnitPrice",
            ),
            total_price=(pl.col("Quantity") * pl.col("UnitPrice")).sum().round(2),
        )
        .sort("ts", "InvoiceNo")
    )
    events = []
    for row in orders.iter_rows(named=True):
        invoice = row["InvoiceNo"]
        event = {
            "event": "order_complete",
            "timestamp": row["ts"].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "event_id": import_event_id(SOURCE, invoice),
            "device_type": "web",
            "order_id": invoice,
            "order_items": [
                {k: v for k, v in item.items() if v is not None} for item in row["order_items"]
            ],
            "total_price": row["total_price"],
            "currency": "GBP",
            "shipping_address": {"country": row["country"]},
        }
        if row["customer"] is not None:
            event["user_id"] = row["customer"]
        else:
            event["client_id"] = f"online-retail-guest-{invoice}"
        events.append(event)
    return ImportPlan(SOURCE, events, rows_read=df.height, skipped=skipped)
