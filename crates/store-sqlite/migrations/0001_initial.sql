-- Sessions, their refresh tokens, signing keys and the audit trail.
-- Instants are milliseconds since the Unix epoch.

CREATE TABLE sessions (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    tenant_id         TEXT,
    device_id         TEXT NOT NULL,
    device_name       TEXT,
    device_type       TEXT NOT NULL,
    browser           TEXT,
    os                TEXT,
    ip                TEXT,
    user_agent        TEXT,
    claims            TEXT NOT NULL,
    metadata          TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    last_active_at    INTEGER NOT NULL,
    idle_expires_at   INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    access_expires_at INTEGER NOT NULL,
    revoked_at        INTEGER,
    revoke_reason     TEXT
) STRICT;

-- Listing and the per-user limit read a user's unrevoked sessions by recency.
CREATE INDEX sessions_by_user_activity ON sessions (user_id, last_active_at)
    WHERE revoked_at IS NULL;
-- The revocation feed reads recent revocations.
CREATE INDEX sessions_by_revocation ON sessions (revoked_at)
    WHERE revoked_at IS NOT NULL;
-- The purger finds sessions past their idle expiry (never later than the absolute one).
CREATE INDEX sessions_by_idle_expiry ON sessions (idle_expires_at);

-- Refresh tokens, by the SHA-256 hash of the token; the token itself is never stored.
CREATE TABLE refresh_tokens (
    hash             BLOB PRIMARY KEY,
    session_id       TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at        INTEGER NOT NULL,
    spent_at         INTEGER,
    successor_hash   BLOB,
    sealed_successor BLOB
) STRICT, WITHOUT ROWID;

CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    algorithm  TEXT NOT NULL,
    secret     BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE audit_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    type       TEXT NOT NULL,
    severity   TEXT NOT NULL,
    user_id    TEXT,
    session_id TEXT,
    ip         TEXT,
    at         INTEGER NOT NULL,
    details    TEXT NOT NULL
) STRICT;

CREATE INDEX audit_events_by_session ON audit_events (session_id);
