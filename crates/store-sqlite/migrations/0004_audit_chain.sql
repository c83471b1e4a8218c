-- The audit chain (see sessiond_core::audit and docs/audit.md). Writers keep appending events
-- unsealed in their own transactions; the sealer then gives each, in id order (which is commit
-- order: one writer commits at a time), its place in the chain: `chain_seq`, `prev_hash` and
-- `hash`. `seq` remains the row id; the chain's sequence number, the API's `seq`, is
-- `chain_seq`.
ALTER TABLE audit_events ADD COLUMN chain_seq INTEGER;
ALTER TABLE audit_events ADD COLUMN prev_hash BLOB;
ALTER TABLE audit_events ADD COLUMN hash BLOB;

-- Readers page through the chain by seq; a seq is never given twice.
CREATE UNIQUE INDEX audit_events_by_chain_seq ON audit_events (chain_seq);
-- The sealer finds the unsealed events in id order.
CREATE INDEX audit_events_unsealed ON audit_events (seq) WHERE chain_seq IS NULL;
-- `GET /v1/audit?user_id=` pages through one user's events.
CREATE INDEX audit_events_by_user ON audit_events (user_id, chain_seq);

-- The seq and hash of the newest sealed event, kept apart from the events so that deleting
-- the newest events shows. One row.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL
) STRICT;
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));

-- Where a pruned chain resumes: the seq and hash of the last pruned event, with an HMAC under
-- the checkpoint key. At most one row, replaced by each pruning.
CREATE TABLE audit_checkpoint (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL,
    at   INTEGER NOT NULL,
    mac  BLOB NOT NULL
) STRICT;

-- The checkpoint key, kept with the signing keys (and protected like them). One row.
CREATE TABLE audit_keys (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    secret BLOB NOT NULL
) STRICT;
