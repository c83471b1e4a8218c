-- A spent token's sealed successor pair is handed out again only while its replay window is
-- open (`sessiond_core::refresh::decide_refresh`); after that it is dead weight, some 800
-- bytes per refresh kept for as long as the session lives. A pair now records when its token
-- was spent, so that the purge can delete the pairs whose window has closed, oldest first
-- (the pairs are appended in the order they were written).
ALTER TABLE successor_seals ADD COLUMN spent_at INTEGER;

-- Pairs written before this migration have no time of their own: they count as spent when it
-- ran. One row; an ALTER TABLE that filled the column would rewrite every pair.
CREATE TABLE successor_seals_unstamped (
    migrated_at INTEGER NOT NULL
) STRICT;
INSERT INTO successor_seals_unstamped (migrated_at)
VALUES (CAST(unixepoch('subsec') * 1000 AS INTEGER));
