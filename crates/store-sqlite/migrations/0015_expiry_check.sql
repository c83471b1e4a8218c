-- When the announcer and the purge look at a session again: a time no later than its idle
-- expiry. Every refresh moves `idle_expires_at`, and an index on it cost every refresh one
-- more page at a random place in the file (written to the WAL, and again at the checkpoint).
-- A refresh leaves `expiry_check_at` alone, so no index on `sessions` moves with a refresh;
-- the announcer moves it up to the idle expiry when it finds a session refreshed since (once
-- per idle timeout of an active session at most), and a refresh lowers it only if the idle
-- expiry went down (a shorter idle timeout).
--
-- This migration writes every session row once: expect a few seconds per million sessions
-- before the server answers.

ALTER TABLE sessions ADD COLUMN expiry_check_at INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET expiry_check_at = idle_expires_at;

-- The announcer finds unrevoked sessions due a look that it has not announced yet; the purge
-- finds expired ones through both.
DROP INDEX sessions_unannounced_expiry;
DROP INDEX sessions_announced_expiry;
CREATE INDEX sessions_unannounced_expiry ON sessions (expiry_check_at)
    WHERE revoked_at IS NULL AND expiry_announced = 0;
CREATE INDEX sessions_announced_expiry ON sessions (expiry_check_at)
    WHERE revoked_at IS NULL AND expiry_announced = 1;
