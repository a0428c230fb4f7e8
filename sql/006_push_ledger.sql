-- Push delivery ledger, token invalidations and opt-outs. Schema `push` sits outside the
-- schemas dbt rebuilds, so a dbt build never forgets what was sent or which tokens died.
-- Planning inserts one row per (campaign, run, person) before anything is sent; the unique key
-- makes a re-run a no-op and a resumed run send only rows still 'planned'.
CREATE SCHEMA IF NOT EXISTS push;

CREATE TABLE IF NOT EXISTS push.deliveries (
    delivery_id  uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    campaign     text        NOT NULL,
    run_id       text        NOT NULL,
    person_id    text        NOT NULL,
    channel      text,
    push_token   text,
    send_at      timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    title        text,
    body         text,
    status       text        NOT NULL DEFAULT 'planned'
                 CHECK (status IN ('planned', 'sent', 'failed', 'skipped')),
    reason       text,
    planned_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    UNIQUE (campaign, run_id, person_id),
    CHECK ((status IN ('failed', 'skipped')) = (reason IS NOT NULL))
);

-- Frequency caps read a person's sent pushes over the last week, across campaigns.
CREATE INDEX IF NOT EXISTS deliveries_person_sent
    ON push.deliveries (person_id, finished_at) WHERE status = 'sent';
-- Senders pick up what is still to go.
CREATE INDEX IF NOT EXISTS deliveries_planned
    ON push.deliveries (campaign, run_id) WHERE status = 'planned';

CREATE TABLE IF NOT EXISTS push.token_invalidations (
    push_token     text        NOT NULL PRIMARY KEY,
    service        text        NOT NULL CHECK (service IN ('fcm', 'apns')),
    reason         text        NOT NULL,
    delivery_id    uuid,
    invalidated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS push.opt_outs (
    person_id    text        NOT NULL PRIMARY KEY,
    opted_out_at timestamptz NOT NULL DEFAULT now(),
    source       text
);
