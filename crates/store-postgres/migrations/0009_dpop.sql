-- DPoP (RFC 9449). A session bound to a client's key keeps the key's thumbprint (RFC 7638,
-- base64url): a public value, so stored as it is. NULL for a session not bound (yet).
ALTER TABLE sessions ADD COLUMN dpop_jkt TEXT;

-- The replay cache shared by every instance: the id (a SHA-256 over the key's thumbprint and
-- the proof's jti) of each proof accepted, until the proof would be refused as stale anyway.
-- The primary key makes one instance's INSERT ... ON CONFLICT the only one to see an id as new;
-- the purge deletes expired rows.
CREATE TABLE dpop_proofs (
    replay_id  BYTEA PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

CREATE INDEX dpop_proofs_by_expiry ON dpop_proofs (expires_at);
