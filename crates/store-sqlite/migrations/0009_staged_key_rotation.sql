-- Staged key rotation. A rotation publishes its new key at once and lets it sign only from
-- signs_from, a publication delay later; the key it replaces signs until then (its
-- deactivated_at is the new key's signs_from). Keys stored before this migration signed from
-- their creation.
ALTER TABLE signing_keys ADD COLUMN signs_from INTEGER NOT NULL DEFAULT 0;
UPDATE signing_keys SET signs_from = created_at;
