-- A session's moving fields (`last_active_at`, `idle_expires_at`, `access_expires_at`) live
-- beside its refresh tokens, so that a rotation writes one page at a random place in the
-- file instead of two.
--
-- A rotation updates its spent token and inserts the successor, whose key sorts right after
-- it (the chain and position that begin a token's key), on one page of the token tree; it
-- also moved its session forward, on a page of the session table. Once the file outgrows the
-- page cache and the sessions refreshed together are not neighbours, each of those pages is
-- read from the file and written back by the checkpointer on its own. Now the rotation writes
-- the moving fields into the session's *activity row*, a row of the token tree whose key is
-- the session's chain, then the position 0xFFFFFFFF, then the session's 16-byte UUID
-- (28 bytes, where a token's key is 32): it sorts right after the newest token of the chain,
-- on the page the rotation writes anyway. The session's own row is only read.
--
-- `sessions.activity` holds that key, set when the session is created (or, for a session
-- created before this migration, at its next rotation); the activity row itself is written by
-- the first rotation. Its `issued_at` is the session's last activity, and it carries the two
-- expiries in the columns added here, which token rows leave NULL. The session row's own
-- values hold until the activity row exists.
--
-- Every read of a session's moving fields goes through `live_sessions`, which is the session
-- row with the activity row's values in place of its own (a rotation alone reads the row's
-- access expiry, as a floor: the activity row's is never earlier). A column added to
-- `sessions` must be added to the view.
ALTER TABLE sessions ADD COLUMN activity BLOB;
ALTER TABLE refresh_tokens ADD COLUMN idle_expires_at INTEGER;
ALTER TABLE refresh_tokens ADD COLUMN access_expires_at INTEGER;
CREATE VIEW live_sessions AS
SELECT s.rowid AS row_id, s.id, s.user_id, s.tenant_id, s.device_id, s.device_name,
       s.device_type, s.browser, s.os, s.ip, s.user_agent, s.claims, s.metadata, s.created_at,
       COALESCE(a.issued_at, s.last_active_at) AS last_active_at,
       COALESCE(a.idle_expires_at, s.idle_expires_at) AS idle_expires_at,
       s.expires_at,
       COALESCE(a.access_expires_at, s.access_expires_at) AS access_expires_at,
       s.revoked_at, s.revoke_reason, s.expiry_announced, s.dpop_jkt, s.expiry_check_at,
       s.activity
FROM sessions s
LEFT JOIN refresh_tokens a ON a.hash = s.activity AND a.session_id = s.id;
