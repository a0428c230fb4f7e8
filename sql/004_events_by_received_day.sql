-- raw.events partitioned by the day the collector RECEIVED each event, not by its timestamp.
--
-- Why: partitioning by event time let one request create a partition per distinct day its
-- timestamps named (3,000 days -> 3,000 tables, and PostgreSQL's lock table overflowed at
-- 12,000). By received day, a flush touches today's partition (yesterday's around midnight)
-- whatever its timestamps say; late and backfilled events land in today's partition; the
-- incremental dbt reads by received_at prune to the newest partitions; and retention drops
-- whole received days (docs/collector.md).
--
-- Deduplication moves to raw.event_keys: a primary key on a partitioned table must contain
-- the partition key, and a retry has a new received_at. One row per (scope, event_id) ever
-- stored; scope is the write key ('http:<name>') or 'ingest' for files, so one source never
-- shadows another's event.

DROP INDEX IF EXISTS raw.events_received_at_brin;
ALTER TABLE raw.events RENAME TO events_by_event_day;

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
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL,
    event_ts    timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    client_id   text,
    user_id     text,
    device_type text,
    push_token  text,
    email       text,
    phone       text,
    source      text        NOT NULL,
    payload     jsonb       NOT NULL
) PARTITION BY RANGE (received_at);

COMMENT ON TABLE raw.events IS
    'Accepted tracking events, partitioned by received day: normalised envelope columns plus '
    'the original event in payload. Unique per (scope, event_id) through raw.event_keys.';

CREATE INDEX events_received_at_brin ON raw.events USING brin (received_at);

CREATE TABLE raw.event_keys (
    scope       text        NOT NULL,
    event_id    uuid        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, event_id)
);

COMMENT ON TABLE raw.event_keys IS
    'One row per stored event: the collector stores an event only if its (scope, event_id) '
    'is new here. Rows older than the retry window may be deleted (docs/collector.md).';

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
                part, d::text || ' 00:00:00+00', (d + 1)::text || ' 00:00:00+00');
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

INSERT INTO raw.event_keys (scope, event_id, received_at)
SELECT DISTINCT ON (scope, event_id) scope, event_id, received_at
FROM (
    SELECT CASE WHEN source LIKE 'http:%' THEN source ELSE 'ingest' END AS scope,
           event_id, received_at
    FROM raw.events_by_event_day
) k
ORDER BY scope, event_id, received_at;

INSERT INTO raw.events
SELECT DISTINCT ON (scope, e.event_id) e.event_id, e.event_type, e.event_ts, e.received_at,
       e.client_id, e.user_id, e.device_type, e.push_token, e.email, e.phone, e.source,
       e.payload
FROM (
    SELECT *, CASE WHEN source LIKE 'http:%' THEN source ELSE 'ingest' END AS scope
    FROM raw.events_by_event_day
) e
ORDER BY scope, e.event_id, e.received_at;

DROP TABLE raw.events_by_event_day;
