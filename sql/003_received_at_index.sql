-- Incremental dbt runs read raw.events by received_at. Rows arrive in received_at order, so a
-- BRIN index (a few pages per partition, nearly free to maintain on COPY) lets those runs
-- skip everything older than their cut-off instead of scanning the whole table.
CREATE INDEX IF NOT EXISTS events_received_at_brin ON raw.events USING brin (received_at);
