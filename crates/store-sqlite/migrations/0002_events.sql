-- Live session events (see sessiond_core::event), kept for a retention window so that a
-- stream can resume. `id` is the cursor: one writer commits at a time, so ids are assigned in
-- commit order and a reader never sees a smaller id commit after a larger one.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    type       TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    session_id TEXT,
    at         INTEGER NOT NULL,
    data       TEXT NOT NULL
) STRICT;

-- A user's stream resumes from a cursor.
CREATE INDEX events_by_user ON events (user_id, id);
-- Retention deletes by age.
CREATE INDEX events_by_time ON events (at);

-- Whether the session's expiry has been announced (`session.expired`).
ALTER TABLE sessions ADD COLUMN expiry_announced INTEGER NOT NULL DEFAULT 0;

-- The announcer finds unrevoked sessions past their idle expiry (never later than the
-- absolute one) that it has not announced yet.
CREATE INDEX sessions_unannounced_expiry ON sessions (idle_expires_at)
    WHERE revoked_at IS NULL AND expiry_announced = 0;
