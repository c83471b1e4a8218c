-- DPoP (RFC 9449). A session bound to a client's key keeps the key's thumbprint (RFC 7638,
-- base64url): a public value, so stored as it is. NULL for a session not bound (yet).
ALTER TABLE sessions ADD COLUMN dpop_jkt TEXT;

-- The replay cache: the id (a SHA-256 over the key's thumbprint and the proof's jti) of each
-- proof accepted, until the proof would be refused as stale anyway. The purge deletes expired
-- rows, so the table holds about a proof window's worth of refreshes.
CREATE TABLE dpop_proofs (
    replay_id  BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX dpop_proofs_by_expiry ON dpop_proofs (expires_at);
