-- Housekeeping of raw.events' daily partitions, paced so that it does not compete with the
-- collector's commits right after a bulk load.
--
-- Why: a partition that just received a million rows (a backfill, an import, a burst of
-- batches) is vacuumed (insert threshold: 1,000 rows + 20 %) and analysed by autovacuum
-- within its next one-minute round. At the server's pace (cost delay 2 ms) that vacuum
-- reads and dirties the whole 460 MB heap in a few seconds of full speed and the analyse
-- reads 30,000 pages and computes statistics of every column, the jsonb payload included:
-- on a two-core machine both take a core away from the collector and its PostgreSQL backend
-- exactly when the next single events arrive (bench/collector_bench.py --burst-runs).
-- Append-only partitions gain nothing from an early vacuum (no dead rows; the visibility
-- map and freezing can wait minutes), so theirs runs at a tenth of the pace: about 5 % of
-- one core instead of a third, the same total work spread over a couple of minutes.
--
-- The payload column gets no statistics: queries read fields out of it and never filter on
-- the whole document, so its statistics are never used, and skipping them takes about 40 %
-- off every analyse of a partition.
--
-- Set on every existing partition here and on each new one by raw.ensure_event_partitions
-- (storage parameters of a partitioned table are not inherited by its partitions).

CREATE OR REPLACE FUNCTION raw.prepare_event_partition(part regclass)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'ALTER TABLE %s SET (autovacuum_vacuum_cost_delay = 20, '
        'autovacuum_vacuum_cost_limit = 200)', part);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN payload SET STATISTICS 0', part);
END;
$$;

-- The function of 004, with each new partition prepared as it is created.
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
            PERFORM raw.prepare_event_partition(format('raw.%I', part)::regclass);
            created := created + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END;
$$;

DO $$
DECLARE r record;
BEGIN
    FOR r IN
        SELECT i.inhrelid::regclass AS part FROM pg_inherits i
        WHERE i.inhparent = 'raw.events'::regclass
    LOOP
        PERFORM raw.prepare_event_partition(r.part);
    END LOOP;
END;
$$;
