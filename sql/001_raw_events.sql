-- Raw events: everything downstream is rebuilt from this table.
-- Partitioned by event day so old days can be detached/archived and recent days stay hot.
-- The primary key must contain the partition key, so an event is identified by
-- (event_id, event_ts): a retry carries the same id and the same client timestamp.
CREATE SCHEMA IF NOT EXISTS raw;

CREATE TABLE IF NOT EXISTS raw.events (
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
    payload     jsonb       NOT NULL,
    PRIMARY KEY (event_id, event_ts)
) PARTITION BY RANGE (event_ts);

COMMENT ON TABLE raw.events IS
    'Accepted tracking events: normalised envelope columns plus the original event in payload.';

-- Creates the daily partitions covering [first_day, last_day]; safe to call concurrently.
CREATE OR REPLACE FUNCTION raw.ensure_event_partitions(first_day date, last_day date)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d date;
    created integer := 0;
    part text;
BEGIN
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

-- A week back and a month ahead exist from the start; the collector adds others on demand.
SELECT raw.ensure_event_partitions(current_date - 7, current_date + 31);

-- Every event the collector refused, with the reasons, so nothing sent is silently lost.
CREATE TABLE IF NOT EXISTS raw.rejected_events (
    rejected_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL,
    source      text        NOT NULL,
    batch_index integer,
    errors      text[]      NOT NULL,
    payload     jsonb,
    raw_text    text
);

CREATE INDEX IF NOT EXISTS rejected_events_received_at ON raw.rejected_events (received_at);
