-- A session's refresh tokens are found by walking their chain, not through an index by session.
--
-- `refresh_tokens_by_session` was written by every rotation (two entries, the spent token's new
-- row version and its successor, in a page chosen by a random session id) and read only when
-- deleting a session cascaded to its tokens; the foreign key behind that cascade also made
-- every successor's insert look up and share-lock its session row, which the rotation holds
-- locked for update already, so each rotation created a multixact. Both go. The tokens of a
-- session form one chain (its first token, then each token's successor), so a purge deletes
-- them by walking that chain from `refresh_token_chains`, each step by primary key.
--
-- This migration reads the token table once: expect some seconds per million tokens before
-- the server answers.
SET LOCAL statement_timeout = 0;

-- The first token of each session, where the purge starts walking its chain.
CREATE TABLE refresh_token_chains (
    session_id  UUID PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    first_token BYTEA NOT NULL
);

-- The head of a session's chain is its token that is no other token's successor (the earliest,
-- should a damaged database hold several).
INSERT INTO refresh_token_chains (session_id, first_token)
SELECT DISTINCT ON (t.session_id) t.session_id, t.hash
FROM refresh_tokens t
WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens p WHERE p.successor_hash = t.hash)
ORDER BY t.session_id, t.issued_at, t.hash;

ALTER TABLE refresh_tokens DROP CONSTRAINT refresh_tokens_session_id_fkey;
DROP INDEX refresh_tokens_by_session;
