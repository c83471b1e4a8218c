-- A session's revocation reaches its activity row (migration 0020), so that a rotation checks
-- and moves its session in the token tree alone, without reading the session's row.
--
-- A rotation already writes the page of the token tree that holds its token and, right after
-- the chain's newest token, its session's activity row. It also read the session's row, at a
-- random place in the session table, to learn that the session is unrevoked (and, for its
-- `session.refreshed` event, whose it is). Once the file outgrows the page cache, that read is
-- a page of its own from the file for every rotation. Now a session's revocation marks its
-- activity row as well: the row's `spent_at` is the session's `revoked_at`, set by the trigger
-- below in the revoking statement's transaction, so that no revocation can miss it. An
-- activity row whose `spent_at` is set no longer moves; a rotation that finds one (or finds no
-- activity row, or would move the idle expiry back) goes through the session's row as before.
--
-- A session created from this migration on has its activity row from its creation, right
-- after its first token, so that its first rotation moves it there alone as well; a session
-- created before gets it at its next rotation, as migration 0020 describes.
--
-- Sessions revoked before this migration get the mark here: only their activity rows are
-- written, and only those of revoked sessions that were refreshed since migration 0020.
UPDATE refresh_tokens SET spent_at = (
    SELECT s.revoked_at FROM sessions s
    WHERE s.activity = refresh_tokens.hash AND s.id = refresh_tokens.session_id
)
WHERE hash IN (SELECT activity FROM sessions WHERE revoked_at IS NOT NULL AND activity IS NOT NULL);

CREATE TRIGGER sessions_revoked_activity AFTER UPDATE OF revoked_at ON sessions
    WHEN new.revoked_at IS NOT NULL AND new.activity IS NOT NULL
BEGIN
    UPDATE refresh_tokens SET spent_at = new.revoked_at
    WHERE hash = new.activity AND session_id = new.id;
END;
