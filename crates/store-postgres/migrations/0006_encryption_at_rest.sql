-- Encryption at rest. Encrypted columns keep their names and types: a sealed value starts with
-- `sdenc1` (text columns: `sdenc1:` and base64), and a value without it was written before this
-- migration and is read as it is. New values are written sealed.
--
-- The key-check value of the master key the data keys are wrapped under: an HMAC of a fixed
-- label, so a wrong key is told apart before anything is read or written.
CREATE TABLE master_key (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    check_value BYTEA NOT NULL
);

-- Data keys, each wrapped (AES-256-GCM) under the master key. A sealed value names its data
-- key by id; rotating the master key rewrites only these rows.
CREATE TABLE data_keys (
    id         BIGINT PRIMARY KEY,
    wrapped    BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
