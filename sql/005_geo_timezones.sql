-- Time zones of geo_location positions, looked up offline in Python (crm/timezones.py, run by
-- `crm transform` before dbt): SQL has no zone polygons. A schema of its own that dbt never
-- rebuilds, so a full refresh keeps the lookups; dbt reads the table as a source.

CREATE SCHEMA IF NOT EXISTS enrich;

CREATE TABLE IF NOT EXISTS enrich.geo_timezones (
    -- rounded to 0.01 degree (about 1 km): nearby positions share one lookup
    latitude     numeric(5, 2) NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude    numeric(5, 2) NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    timezone     text          NOT NULL,
    looked_up_with text        NOT NULL,  -- library and version, e.g. 'tzfpy 2.1.1'
    looked_up_at timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (latitude, longitude)
);

COMMENT ON TABLE enrich.geo_timezones IS
    'IANA zone of each rounded geo_location position seen in raw.events (crm/timezones.py).';

-- How far each enrichment step has read raw.events (by received_at); the next run re-reads
-- from there minus a margin for rows that committed out of order.
CREATE TABLE IF NOT EXISTS enrich.watermarks (
    step        text        PRIMARY KEY,
    received_at timestamptz NOT NULL
);
