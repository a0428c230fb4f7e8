"""Micro-benchmark of `collector.validation.validate_events` on realistic mixed batches.

    .venv/bin/python bench/validation_bench.py [--batch 100] [--seconds 3] [--invalid 0]

Prints events/s for one core. The batch mimics a storefront's traffic: mostly page views,
product views, scrolls and clicks, a few cart / checkout events, the odd login with an
e-mail and a phone; 70 % carry a tracker-made UUID `event_id`, the rest get a derived one.
`--invalid N` spoils N events of the batch (unknown type) to time the per-item fallback path.
"""

from __future__ import annotations

import argparse
import copy
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from collector.catalogue import EXAMPLES
from collector.validation import validate_events

# Relative frequencies of event types on a typical shop.
MIX = {
    "page_view": 30, "product_view": 15, "scroll": 12, "click": 10, "time_on_page": 8,
    "search": 5, "add_to_cart": 5, "remove_from_cart": 2, "checkout_start": 2,
    "order_complete": 1, "payment_success": 1, "checkout_abandonment": 1, "user_login": 2,
    "user_logout": 1, "push_received": 1, "push_opened": 1, "geo_location": 1,
    "payment_failure": 1, "purchase_history": 1, "visit_history": 1, "user_recommendation": 1,
}


def make_batch(size: int, seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    names = rnd.choices(list(MIX), weights=list(MIX.values()), k=size)
    start = datetime(2024, 12, 7, 10, tzinfo=UTC)
    batch = []
    for i, name in enumerate(names):
        event = copy.deepcopy(EXAMPLES[name])
        event["timestamp"] = (start + timedelta(seconds=7 * i)).isoformat().replace(
            "+00:00", "Z"
        )
        if "client_id" in event:
            event["client_id"] = f"CID{rnd.randrange(10**9):09d}"
        if rnd.random() < 0.7:
            event["event_id"] = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        else:
            event.pop("event_id", None)
        batch.append(event)
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--invalid", type=int, default=0)
    args = parser.parse_args()

    batch = make_batch(args.batch)
    for i in range(args.invalid):
        batch[i * len(batch) // args.invalid]["event"] = "teleport"
    received = datetime(2024, 12, 8, tzinfo=UTC)
    events, rejected = validate_events(batch, received)
    assert len(rejected) == args.invalid and len(events) + len(rejected) == len(batch)
    for _ in range(200):  # warm-up
        validate_events(batch, received)

    rounds = 0
    began = time.perf_counter()
    deadline = began + args.seconds
    while True:
        for _ in range(50):
            validate_events(batch, received)
        rounds += 50
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = now - began
    rate = rounds * len(batch) / elapsed
    print(
        f"validate_events: batch={len(batch)} invalid={args.invalid} rounds={rounds} "
        f"elapsed={elapsed:.2f}s "
        f"-> {rate:,.0f} events/s ({1e6 / rate:.2f} us/event)"
    )


if __name__ == "__main__":
    main()
