"""Small builders of valid tracking events for tests."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any


def now_iso(offset: dt.timedelta = dt.timedelta()) -> str:
    return (dt.datetime.now(dt.UTC) + offset).isoformat()


def page_view(**fields: Any) -> dict[str, Any]:
    event = {
        "event": "page_view",
        "event_id": str(uuid.uuid4()),
        "timestamp": now_iso(),
        "client_id": f"cid-{uuid.uuid4().hex[:12]}",
        "device_type": "web",
        "page_url": "https://shop.example/catalog/mugs",
        "referrer": "https://www.google.com/",
    }
    event.update(fields)
    return event


def batch(n: int, **fields: Any) -> list[dict[str, Any]]:
    return [page_view(**fields) for _ in range(n)]
