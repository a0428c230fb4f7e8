-- raw.events partitioned by the day the collector RECEIVED each event, not by its timestamp.
--
-- Why: partitioning by event time let one request create a partition per distinct day its
-- timestamps named (3,000 days -> 3,000 tables, and PostgreSQL's lock table overflowed at
-- 12,000). By received day, a flush touches today's partition (yesterday's around midnight)
-- whatever its timestamps say; late and backfilled events land in today's partition; the
-- incremental dbt reads by received_at prune to the newest partitions; and retention drops
-- whole received days (docs/collector.md).
--
-- Deduplication is per source: the key is (event_id, scope, received_day), where the scope is
-- the write key ('http:<name>') or 'ingest' for files and imports, so one source never
-- shadows another's event. A retry received on the same day hits the key; one received on a
-- later day is found by the collector's look-back over recent days (collector/storage.py).

ALTER TABLE raw.events RENAME TO events_by_event_day;
ALTER INDEX IF EXISTS raw.events_received_at_brin RENAME TO events_by_event_day_brin;

DO $$
DECLARE r record;
BEGIN
    FOR r IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'raw.events_by_event_day'::regclass
    LOOP
        EXECUTE format('ALTER TABLE raw.%I RENAME TO %I', r.relname, 'old_' || r.relname);
    END LOOP;
END;
$$;

CREATE TABLE raw.events (
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    event_ts     timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    client_id    text,
    user_id      text,
    device_type  text,
    push_token   text,
    email        text,
    phone        text,
    source       text        NOT NULL,
    payload      jsonb       NOT NULL,
    -- The partition key: the UTC day of received_at.
    received_day date        NOT NULL,
    -- The deduplication scope: the write key for HTTP, one scope for every file load.
    scope        text        NOT NULL
        GENERATED ALWAYS AS (CASE WHEN source LIKE 'http:%' THEN source ELSE 'ingest' END)
        STORED,
    CHECK (received_day = (received_at AT TIME ZONE 'UTC')::date),
    PRIMARY KEY (event_id, scope, received_day)
) PARTITION BY RANGE (received_day);

COMMENT ON TABLE raw.events IS
    'Accepted tracking events, partitioned by received day: normalised envelope columns plus '
    'the original event in payload. Stored once per (event_id, scope).';

CREATE INDEX events_received_at_brin ON raw.events USING brin (received_at);

-- Same signature as before; the partitions now cover received days.
CREATE OR REPLACE FUNCTION raw.ensure_event_partitions(first_day date, last_day date)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    created integer := 0;
    part text;
BEGIN
    IF last_day - first_day > 62 THEN
        RAISE EXCEPTION 'refusing to create % partitions at once', last_day - first_day + 1;
    END IF;
    -- Serialise creators: two collectors creating the same partition would otherwise race.
    PERFORM pg_advisory_xact_lock(hashtext('raw.events partitions'));
    d := first_day;
    WHILE d <= last_day LOOP
        part := format('events_%s', to_char(d, 'YYYYMMDD'));
        IF to_regclass(format('raw.%I', part)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE raw.%I PARTITION OF raw.events FOR VALUES FROM (%L) TO (%L)',
                part, d, d + 1);
            created := created + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END;
$$;

-- Move what is stored: one partition per received day it holds, then today and a week ahead.
DO $$
DECLARE d date;
BEGIN
    FOR d IN
        SELECT DISTINCT (received_at AT TIME ZONE 'UTC')::date FROM raw.events_by_event_day
    LOOP
        PERFORM raw.ensure_event_partitions(d, d);
    END LOOP;
END;
$$;
SELECT raw.ensure_event_partitions(
    (now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 7);

INSERT INTO raw.events (event_id, event_type, event_ts, received_at, client_id, user_id,
                        device_type, push_token, email, phone, source, payload, received_day)
SELECT event_id, event_type, event_ts, received_at, client_id, user_id, device_type,
       push_token, email, phone, source, payload, (received_at AT TIME ZONE 'UTC')::date
FROM raw.events_by_event_day
ORDER BY received_at
ON CONFLICT DO NOTHING;

DROP TABLE raw.events_by_event_day;
