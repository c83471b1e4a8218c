-- Every refresh moves a session's last_active_at and idle_expires_at, and every index on a
-- column that moves is one more page written (and later checkpointed) per refresh. Two such
-- indexes go:
--
-- * sessions_by_user_activity: a user's sessions are found through sessions_by_device
--   (user_id, device_id) and ordered in memory; a user has a handful of them.
-- * sessions_by_idle_expiry: the purge finds expired sessions through two partial indexes
--   instead, sessions_unannounced_expiry (until the expiry is announced, which already exists)
--   and sessions_announced_expiry (after; its rows never move again, since an expired session
--   is never refreshed).
DROP INDEX sessions_by_user_activity;
DROP INDEX sessions_by_idle_expiry;
CREATE INDEX sessions_announced_expiry ON sessions (idle_expires_at)
    WHERE revoked_at IS NULL AND expiry_announced = 1;
