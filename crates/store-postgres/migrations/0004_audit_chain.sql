-- The audit chain (see sessiond_core::audit and docs/audit.md). Writers keep appending events
-- unsealed in their own transactions, so they never wait for one another on the chain; one
-- sealer at a time (an advisory lock) then gives each its place in the chain: `chain_seq`,
-- `prev_hash` and `hash`. `seq` remains the row id; the chain's sequence number, the API's
-- `seq`, is `chain_seq`.
--
-- Row ids are taken before commit, so they are not commit order. Like events, each row
-- records its writing transaction (`tx`), and the sealer takes only rows whose `tx` is below
-- the oldest transaction still running (`pg_snapshot_xmin`), in `(tx, seq)` order: every
-- transaction that could still commit an audit event has a larger `tx`, so no event can
-- commit before one already sealed.
ALTER TABLE audit_events
    ADD COLUMN tx BIGINT NOT NULL DEFAULT (pg_current_xact_id()::TEXT::BIGINT),
    ADD COLUMN chain_seq BIGINT,
    ADD COLUMN prev_hash BYTEA CHECK (octet_length(prev_hash) = 32),
    ADD COLUMN hash BYTEA CHECK (octet_length(hash) = 32);

-- Readers page through the chain by seq; a seq is never given twice.
CREATE UNIQUE INDEX audit_events_by_chain_seq ON audit_events (chain_seq)
    WHERE chain_seq IS NOT NULL;
-- The sealer finds the unsealed events in `(tx, seq)` order.
CREATE INDEX audit_events_unsealed ON audit_events (tx, seq) WHERE chain_seq IS NULL;
-- `GET /v1/audit?user_id=` pages through one user's events.
CREATE INDEX audit_events_by_user ON audit_events (user_id, chain_seq)
    WHERE chain_seq IS NOT NULL;

-- The seq and hash of the newest sealed event, kept apart from the events so that deleting
-- the newest events shows. One row.
CREATE TABLE audit_head (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL CHECK (octet_length(hash) = 32)
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

-- Where a pruned chain resumes: the seq and hash of the last pruned event, with an HMAC under
-- the checkpoint key. At most one row, replaced by each pruning.
CREATE TABLE audit_checkpoint (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    at   BIGINT NOT NULL,
    mac  BYTEA NOT NULL
);

-- The checkpoint key, kept with the signing keys (and protected like them). One row.
CREATE TABLE audit_keys (
    id     SMALLINT PRIMARY KEY CHECK (id = 1),
    secret BYTEA NOT NULL
);
