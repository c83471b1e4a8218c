-- Device Bound Session Credentials: a session bound to a browser's public key (a JWK, public
-- members only), and the SHA-256 of the short-lived credential (a cookie) that only that key
-- renews; the cookie itself is never stored. `generation` counts renewals: a refresh challenge
-- names the generation it was minted for, and a renewal moves it with a compare-and-swap. A
-- binding goes with its session.
CREATE TABLE dbsc_bindings (
    session_id            UUID PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    public_key            TEXT NOT NULL,
    credential_hash       BYTEA NOT NULL,
    credential_expires_at BIGINT NOT NULL,
    generation            BIGINT NOT NULL,
    bound_at              BIGINT NOT NULL
);
