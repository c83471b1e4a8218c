-- A spent token's sealed successor pair is handed out again only while its replay window is
-- open (`sessiond_core::refresh::decide_refresh`); after that it is dead weight, some 800
-- bytes per refresh kept for as long as the session lives. The purge clears the pairs whose
-- window has closed, oldest first, through this index of the tokens still holding one.
CREATE INDEX refresh_tokens_pairs_by_spend ON refresh_tokens (spent_at)
    WHERE sealed_successor IS NOT NULL;
