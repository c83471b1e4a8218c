-- Staged key rotation. A rotation publishes its new key at once and lets it sign only from
-- signs_from, a publication delay later; the key it replaces signs until then (its
-- deactivated_at is the new key's signs_from). A key without signs_from (stored before this
-- migration, or inserted by hand) signs from its creation: sessiond reads
-- coalesce(signs_from, created_at).
ALTER TABLE signing_keys ADD COLUMN signs_from INTEGER;
