-- Sessions, their refresh tokens, signing keys and the audit trail.
-- The same logical tables as the SQLite store. Instants are BIGINT milliseconds since the Unix
-- epoch, the domain's `Timestamp`, so no conversion or time zone stands between the store and
-- the rules, and every comparison uses the caller's clock, never the database's.

CREATE TABLE sessions (
    id                UUID PRIMARY KEY,
    user_id           TEXT NOT NULL,
    tenant_id         TEXT,
    device_id         TEXT NOT NULL,
    device_name       TEXT,
    device_type       TEXT NOT NULL,
    browser           TEXT,
    os                TEXT,
    ip                TEXT,
    user_agent        TEXT,
    -- JSON objects exactly as core serialised them. TEXT rather than JSONB: nothing queries
    -- inside them, and JSONB refuses strings holding "\u0000", which JSON (and SQLite) allow.
    claims            TEXT NOT NULL,
    metadata          TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    last_active_at    BIGINT NOT NULL,
    idle_expires_at   BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    access_expires_at BIGINT NOT NULL,
    revoked_at        BIGINT,
    revoke_reason     TEXT
);

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
    hash             BYTEA PRIMARY KEY CHECK (octet_length(hash) = 32),
    session_id       UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at        BIGINT NOT NULL,
    spent_at         BIGINT,
    successor_hash   BYTEA,
    sealed_successor BYTEA
);

-- Deleting a session cascades to its tokens through this index.
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    algorithm  TEXT NOT NULL,
    secret     BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- `seq` orders events by when they were numbered, which across concurrent transactions is not
-- always the order in which they committed.
CREATE TABLE audit_events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type       TEXT NOT NULL,
    severity   TEXT NOT NULL,
    user_id    TEXT,
    session_id UUID,
    ip         TEXT,
    at         BIGINT NOT NULL,
    details    TEXT NOT NULL
);

CREATE INDEX audit_events_by_session ON audit_events (session_id)
    WHERE session_id IS NOT NULL;
