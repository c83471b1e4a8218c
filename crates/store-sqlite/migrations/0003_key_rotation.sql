-- Key rotation. A rotation deactivates the signing key of an algorithm and stores its
-- successor; a deactivated key still verifies until it is retired, which deletes it.
ALTER TABLE signing_keys ADD COLUMN deactivated_at INTEGER;

-- Before this migration nothing stored a second key of an algorithm; should there be one, every
-- key but the newest of its algorithm counts as replaced when the next one was made.
UPDATE signing_keys
SET deactivated_at = (
    SELECT min(newer.created_at) FROM signing_keys AS newer
    WHERE newer.algorithm = signing_keys.algorithm AND newer.created_at > signing_keys.created_at
)
WHERE EXISTS (
    SELECT 1 FROM signing_keys AS newer
    WHERE newer.algorithm = signing_keys.algorithm AND newer.created_at > signing_keys.created_at
);

-- A counter that every change to signing_keys moves, by whatever process (an operator's
-- manual edit included), so running instances notice a change with one cheap read.
CREATE TABLE signing_keys_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
) STRICT;
INSERT INTO signing_keys_version (id, version) VALUES (1, 0);

CREATE TRIGGER signing_keys_inserted AFTER INSERT ON signing_keys
BEGIN
    UPDATE signing_keys_version SET version = version + 1;
END;
CREATE TRIGGER signing_keys_updated AFTER UPDATE ON signing_keys
BEGIN
    UPDATE signing_keys_version SET version = version + 1;
END;
CREATE TRIGGER signing_keys_deleted AFTER DELETE ON signing_keys
BEGIN
    UPDATE signing_keys_version SET version = version + 1;
END;
