-- An audit row's place in the chain becomes its row id, and events give up AUTOINCREMENT. A
-- refresh writes an audit row and an event; before this, each of its commits also rewrote the
-- page of SQLite's AUTOINCREMENT counters (`sqlite_sequence`), and each audit row went into a
-- second B-tree, the unique index on `chain_seq`: together about a seventh of the pages a
-- rotation wrote to the WAL, and as much of the storage thread's work.
--
-- Audit rows: `chain_seq` is the INTEGER PRIMARY KEY, unique as the index made it, and the
-- listings, the verification and the pruning read the table itself in its order. The former
-- row id `seq` goes: only the sealer read it. A row not yet chained (written unchained by an
-- older build, or by hand) is the one without a hash. Such rows are copied after every
-- chained row, in the order they were written, and so take the row ids after the chain's
-- last; the sealer gives each its position in the chain (`WriteTx::seal_pending`).
--
-- Events: the row id stays the cursor. Without AUTOINCREMENT SQLite numbers a new row after
-- the largest row id, which must therefore never go down: the purge now keeps the newest event.
-- If the purge of a build before this one had deleted the newest events (or all of them), a
-- row without a type holds the last id AUTOINCREMENT gave in their place; readers skip it, and
-- the purge deletes it once a newer event exists.
--
-- Both tables are copied once, inside this migration's transaction.
CREATE TABLE events_rebuilt (
    id         INTEGER PRIMARY KEY,
    type       TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    session_id TEXT,
    at         INTEGER NOT NULL,
    data       TEXT NOT NULL
) STRICT;
INSERT INTO events_rebuilt (id, type, user_id, session_id, at, data)
SELECT id, type, user_id, session_id, at, data FROM events ORDER BY id;
INSERT INTO events_rebuilt (id, type, user_id, session_id, at, data)
SELECT seq, '', '', NULL, 0, '{}' FROM sqlite_sequence
WHERE name = 'events' AND seq > (SELECT COALESCE(MAX(id), 0) FROM events);
DROP TABLE events;
ALTER TABLE events_rebuilt RENAME TO events;

CREATE TABLE audit_events_rebuilt (
    chain_seq  INTEGER PRIMARY KEY,
    type       TEXT NOT NULL,
    severity   TEXT NOT NULL,
    user_id    TEXT,
    session_id TEXT,
    ip         TEXT,
    at         INTEGER NOT NULL,
    details    TEXT NOT NULL,
    prev_hash  BLOB,
    hash       BLOB
) STRICT;
-- Chained rows keep their position; unchained ones (a NULL `chain_seq`) take the next row ids.
INSERT INTO audit_events_rebuilt
    (chain_seq, type, severity, user_id, session_id, ip, at, details, prev_hash, hash)
SELECT CASE WHEN hash IS NULL THEN NULL ELSE chain_seq END,
       type, severity, user_id, session_id, ip, at, details,
       CASE WHEN hash IS NULL THEN NULL ELSE prev_hash END, hash
FROM audit_events
ORDER BY hash IS NULL, chain_seq, seq;
DROP TABLE audit_events;
ALTER TABLE audit_events_rebuilt RENAME TO audit_events;

-- The sealer finds the rows not yet chained in order; a chained row is not in this index.
CREATE INDEX audit_events_unsealed ON audit_events (chain_seq) WHERE hash IS NULL;
