-- Key rotation. A rotation deactivates the signing key of an algorithm and stores its
-- successor; a deactivated key still verifies until it is retired, which deletes it.
ALTER TABLE signing_keys ADD COLUMN deactivated_at BIGINT;

-- Before this migration nothing stored a second key of an algorithm; should there be one, every
-- key but the newest of its algorithm counts as replaced when the next one was made.
UPDATE signing_keys AS old
SET deactivated_at = (
    SELECT min(newer.created_at) FROM signing_keys AS newer
    WHERE newer.algorithm = old.algorithm AND newer.created_at > old.created_at
)
WHERE EXISTS (
    SELECT 1 FROM signing_keys AS newer
    WHERE newer.algorithm = old.algorithm AND newer.created_at > old.created_at
);

-- A counter that every change to signing_keys moves, by whatever process (an operator's
-- manual edit included), so running instances notice a change with one cheap read.
CREATE TABLE signing_keys_version (
    id      SMALLINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO signing_keys_version (id, version) VALUES (1, 0);

-- The function keeps the search_path this migration ran with (sessiond's schema), so it finds
-- `signing_keys_version` whoever changes the keys and with whatever search_path.
CREATE FUNCTION signing_keys_changed() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE signing_keys_version SET version = version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER signing_keys_changed
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON signing_keys
FOR EACH STATEMENT EXECUTE FUNCTION signing_keys_changed();
