-- Device Bound Session Credentials: a session bound to a browser's public key (a JWK, public
-- members only), and the SHA-256 of the short-lived credential (a cookie) that only that key
-- renews; the cookie itself is never stored. `generation` counts renewals: a refresh challenge
-- names the generation it was minted for, and a renewal moves it with a compare-and-swap. A
-- binding goes with its session.
CREATE TABLE dbsc_bindings (
    session_id            TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    public_key            TEXT NOT NULL,
    credential_hash       BLOB NOT NULL,
    credential_expires_at INTEGER NOT NULL,
    generation            INTEGER NOT NULL,
    bound_at              INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
