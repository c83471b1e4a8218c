-- Retired signing keys keep their row. Retiring a key sets retired_at and wipes its secret (an
-- empty blob), so it neither signs nor verifies and is not published, while `sessiond keys
-- list` still shows it; the row is deleted once the retention passes.
ALTER TABLE signing_keys ADD COLUMN retired_at INTEGER;

-- A database from before one active key at a time may hold one active key per algorithm; each
-- instance then signs with the key of its SESSIOND_SIGNING_ALG until the next rotation, which
-- replaces them all.
