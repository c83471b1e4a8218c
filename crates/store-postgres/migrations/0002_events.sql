-- Live session events (see sessiond_core::event), kept for a retention window so that a
-- stream can resume.
--
-- Ids come from a sequence and are taken before commit, so transactions commit out of id order
-- and a reader could see id 7 before id 6 commits. The cursor is therefore `(tx, id)`, where
-- `tx` is the writing transaction's id, and readers return only events whose `tx` is below the
-- oldest transaction still running (`pg_snapshot_xmin`): every transaction that could still
-- commit an event has a larger `tx`, so no event can appear before a cursor once read.
CREATE TABLE events (
    id         BIGSERIAL PRIMARY KEY,
    tx         BIGINT NOT NULL DEFAULT (pg_current_xact_id()::TEXT::BIGINT),
    type       TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    session_id UUID,
    at         BIGINT NOT NULL,
    data       TEXT NOT NULL
);

-- Every stream reads in cursor order; a user's stream resumes from a cursor.
CREATE INDEX events_in_order ON events (tx, id);
CREATE INDEX events_by_user ON events (user_id, tx, id);
-- Retention deletes by age.
CREATE INDEX events_by_time ON events (at);

-- Whether the session's expiry has been announced (`session.expired`).
ALTER TABLE sessions ADD COLUMN expiry_announced BOOLEAN NOT NULL DEFAULT FALSE;

-- The announcer finds unrevoked sessions past their idle expiry (never later than the
-- absolute one) that it has not announced yet.
CREATE INDEX sessions_unannounced_expiry ON sessions (idle_expires_at)
    WHERE revoked_at IS NULL AND NOT expiry_announced;
