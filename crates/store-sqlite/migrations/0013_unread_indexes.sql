-- The audit and event listings read forward from a cursor in chain (or id) order and filter by
-- user, session and type on the way: their `?n IS NULL OR column = ?n` conditions cannot use an
-- index on those columns, so SQLite searches `audit_events_by_chain_seq` and the events' row
-- ids whatever the filters. Three indexes were therefore written with every audit row and
-- event, a refresh's included, and read by no statement: each cost a page scattered over the
-- file per row, written to the WAL and again at the checkpoint.
DROP INDEX IF EXISTS audit_events_by_session;
DROP INDEX IF EXISTS audit_events_by_user;
DROP INDEX IF EXISTS events_by_user;
