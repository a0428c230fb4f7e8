"""Prometheus metrics of the collector (served at GET /metrics)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_ACCEPTED = Counter("crm_events_accepted", "Events validated and committed", ["source"])
EVENTS_REJECTED = Counter("crm_events_rejected", "Events refused by validation", ["source"])
REQUESTS = Counter("crm_requests", "HTTP requests to /v1/events by status", ["status"])
FLUSH_EVENTS = Histogram(
    "crm_flush_events",
    "Events per group commit",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
FLUSH_REQUESTS = Histogram(
    "crm_flush_requests", "Requests sharing one group commit", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
FLUSH_SECONDS = Histogram(
    "crm_flush_seconds",
    "Time to write and commit one flush",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
FLUSH_FAILURES = Counter("crm_flush_failures", "Flushes that failed (database unreachable)")
DATABASE_UP = Gauge(
    "crm_database_up",
    "1 when the last flush or health check reached the database",
    multiprocess_mode="livemin",  # with several workers: 0 if any of them cannot reach it
)
