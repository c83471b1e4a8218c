-- A spent refresh token keeps its successor pair, sealed (about 850 bytes), for grace-window
-- replays. Written into the token's own row, it grew a row keyed by a random hash from about
-- 100 bytes to about 1 KB, at a random place in the token tree, so that tree split a page
-- every few rotations and each rotation wrote about nine pages. The sealed pairs now go to a
-- table of their own, appended in row id order (the rows of one write batch share their
-- pages), and the token row only points at its pair.
--
-- Rows spent before this migration keep their pair in `refresh_tokens.sealed_successor`;
-- new ones leave it NULL and set `successor_seal` instead.
CREATE TABLE successor_seals (
    id     INTEGER PRIMARY KEY,
    sealed BLOB NOT NULL
) STRICT;

ALTER TABLE refresh_tokens ADD COLUMN successor_seal INTEGER;

-- A token's pair goes with the token, however the token goes (a purge deletes its session,
-- and the tokens with it, through their foreign key's cascade, which fires this trigger).
CREATE TRIGGER refresh_tokens_seal_deleted AFTER DELETE ON refresh_tokens
    WHEN old.successor_seal IS NOT NULL
BEGIN
    DELETE FROM successor_seals WHERE id = old.successor_seal;
END;
