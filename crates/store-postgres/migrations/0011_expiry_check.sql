-- When the announcer and the purge look at a session again: a time no later than its idle
-- expiry. Every refresh moves `last_active_at` and `idle_expires_at`; while an index covered
-- either, every refresh wrote a new entry into each of the table's indexes, since PostgreSQL
-- can update a row in place (a HOT update, touching no index) only when no indexed column
-- changes. Now no index covers a column a refresh changes:
--
-- * sessions_by_user_activity goes: a user's sessions are found through sessions_by_device
--   (user_id, device_id) and ordered in memory; a user has a handful of them.
-- * sessions_by_idle_expiry and sessions_unannounced_expiry go; the announcer and the purge
--   find sessions by `expiry_check_at`, which a refresh leaves alone (or lowers, if the idle
--   expiry went down with a shorter idle timeout). The announcer moves it up to the idle
--   expiry when it finds a session refreshed since: once per idle timeout of an active
--   session at most.
-- * Pages of the table keep a tenth free, so that an updated row fits beside its old version.
--
-- This migration writes every session row once: expect some seconds per million sessions
-- before the server answers.
SET LOCAL statement_timeout = 0;

ALTER TABLE sessions ADD COLUMN expiry_check_at BIGINT NOT NULL DEFAULT 0;
UPDATE sessions SET expiry_check_at = idle_expires_at;

DROP INDEX sessions_by_user_activity;
DROP INDEX sessions_by_idle_expiry;
DROP INDEX sessions_unannounced_expiry;
CREATE INDEX sessions_unannounced_expiry ON sessions (expiry_check_at)
    WHERE revoked_at IS NULL AND NOT expiry_announced;
CREATE INDEX sessions_announced_expiry ON sessions (expiry_check_at)
    WHERE revoked_at IS NULL AND expiry_announced;

ALTER TABLE sessions SET (fillfactor = 90);
