"""Prometheus metrics of the collector (served at GET /metrics, behind its own token).

No label names a write key or a source: the scrape endpoint must not tell anyone which keys
exist, and a label per key would let junk keys grow the series without bound."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_ACCEPTED = Counter("crm_events_accepted", "Events validated and committed")
EVENTS_REJECTED = Counter("crm_events_rejected", "Events refused by validation or storage")
EVENTS_DUPLICATE = Counter(
    "crm_events_duplicate_in_request", "Events repeated within one request (stored once)"
)
REQUESTS = Counter("crm_requests", "HTTP requests to /v1/events by status", ["status"])
SERVER_ERRORS = Counter("crm_server_errors", "Responses with a 5xx status, any path", ["status"])
CLIENT_DISCONNECTS = Counter(
    "crm_client_disconnects", "Clients that went away before their request body arrived"
)
IDLE_CLOSED = Counter("crm_idle_connections_closed", "Connections closed for sending nothing")
ISOLATED_FLUSHES = Counter(
    "crm_isolated_flushes",
    "Writes PostgreSQL refused for their data, then split to find the rows at fault",
)
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
