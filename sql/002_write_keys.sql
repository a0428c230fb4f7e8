-- Write keys for the collector. Only a SHA-256 of each key is stored: keys are long random
-- tokens, so a fast hash is enough and lets the collector check a key in microseconds.
CREATE SCHEMA IF NOT EXISTS ops;

CREATE TABLE IF NOT EXISTS ops.write_keys (
    key_id          integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text        NOT NULL UNIQUE,
    key_hash        text        NOT NULL UNIQUE,
    key_prefix      text        NOT NULL,
    allowed_origins text[]      NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);
