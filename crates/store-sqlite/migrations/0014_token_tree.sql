-- The token tree of a rotation: what a refresh writes besides its session row.
--
-- 1. A spent refresh token keeps its successor pair, sealed (about 850 bytes), for
--    grace-window replays. Written into the token's own row, it grew a row keyed by a random
--    hash from about 100 bytes to 1 KB, at a random place in the token tree, so that tree split
--    a page every few rotations. The sealed pairs now go to a table of their own, appended in
--    row id order (the rows of one write batch share their pages), and the token row only
--    points at its pair. Rows spent before this migration keep their pair in
--    `refresh_tokens.sealed_successor`; new ones leave it NULL and set `successor_seal`.
-- 2. The index of tokens by session was written by every rotation (one more page at a random
--    place) and read only by the foreign key's cascade when a purge deleted a session. The
--    tokens of a session form one chain (its first token, then each token's successor), so a
--    purge now deletes them by walking that chain from `refresh_token_chains`, by primary key;
--    the foreign key, which needed the index, goes with it (a table rebuild: SQLite cannot drop
--    a constraint in place).
--
-- This migration copies the token table once: on a 2-core machine about 1.6 s for 150,000
-- sessions, so expect some ten seconds per million tokens before the server answers.

CREATE TABLE successor_seals (
    id     INTEGER PRIMARY KEY,
    sealed BLOB NOT NULL
) STRICT;

-- The first token of each session, where the purge starts walking its chain.
CREATE TABLE refresh_token_chains (
    session_id  TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    first_token BLOB NOT NULL
) STRICT, WITHOUT ROWID;

-- The head of a session's chain is its token that is no other token's successor.
CREATE INDEX refresh_tokens_by_successor ON refresh_tokens (successor_hash)
    WHERE successor_hash IS NOT NULL;
INSERT INTO refresh_token_chains (session_id, first_token)
SELECT session_id, hash FROM (
    SELECT t.session_id, t.hash,
           ROW_NUMBER() OVER (PARTITION BY t.session_id ORDER BY t.issued_at, t.hash) AS n
    FROM refresh_tokens t
    WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens p WHERE p.successor_hash = t.hash)
)
WHERE n = 1;

CREATE TABLE refresh_tokens_rebuilt (
    hash             BLOB PRIMARY KEY,
    session_id       TEXT NOT NULL,
    issued_at        INTEGER NOT NULL,
    spent_at         INTEGER,
    successor_hash   BLOB,
    sealed_successor BLOB,
    successor_seal   INTEGER
) STRICT, WITHOUT ROWID;
INSERT INTO refresh_tokens_rebuilt
    (hash, session_id, issued_at, spent_at, successor_hash, sealed_successor)
SELECT hash, session_id, issued_at, spent_at, successor_hash, sealed_successor
FROM refresh_tokens;
-- Its indexes (by session, by successor) go with it.
DROP TABLE refresh_tokens;
ALTER TABLE refresh_tokens_rebuilt RENAME TO refresh_tokens;

-- A token's pair goes with the token.
CREATE TRIGGER refresh_tokens_seal_deleted AFTER DELETE ON refresh_tokens
    WHEN old.successor_seal IS NOT NULL
BEGIN
    DELETE FROM successor_seals WHERE id = old.successor_seal;
END;
