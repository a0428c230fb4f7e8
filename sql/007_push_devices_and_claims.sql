-- Two additions to the delivery ledger.
-- `device`: a campaign that asks for all devices plans one row per (campaign, run, person,
-- device); every other campaign plans device 0 only, so the key still allows one push per
-- person and run.
-- `attempts` / `attempted_at`: delivery claims a row (attempts + 1) in its own commit before
-- the send and settles it after; a row still 'planned' with attempts > 0 after a crash is one
-- whose send may or may not have reached the push service. It is sent again with the same
-- delivery id (the collapse key on the device), and the ledger shows it.
ALTER TABLE push.deliveries ADD COLUMN IF NOT EXISTS device smallint NOT NULL DEFAULT 0;
ALTER TABLE push.deliveries ADD COLUMN IF NOT EXISTS attempts smallint NOT NULL DEFAULT 0;
ALTER TABLE push.deliveries ADD COLUMN IF NOT EXISTS attempted_at timestamptz;
ALTER TABLE push.deliveries DROP CONSTRAINT IF EXISTS deliveries_campaign_run_id_person_id_key;
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_run_person_device
    ON push.deliveries (campaign, run_id, person_id, device);
-- Frequency caps read each person's pushes, sent or planned, around a time.
CREATE INDEX IF NOT EXISTS deliveries_person_time
    ON push.deliveries (person_id, send_at) WHERE status IN ('sent', 'planned');
