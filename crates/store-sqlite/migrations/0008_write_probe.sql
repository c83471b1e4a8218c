-- A scratch table the health check writes a few pages to, and empties again in the same
-- transaction, to learn whether the database can grow again after writes failed for want of
-- space, permission or a working device. It is always empty.
CREATE TABLE write_probe (
    id     INTEGER PRIMARY KEY,
    filler BLOB NOT NULL
) STRICT;
