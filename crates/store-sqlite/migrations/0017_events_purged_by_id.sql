-- Events are purged from the oldest id on: ids follow the order of commits, and an event's
-- time is when its request began, so the two orders agree to within the milliseconds a request
-- waits for its commit (`SqliteStore::purge_events`). The index by time, one more B-tree
-- insert for every event (every refresh writes one), is no longer read.
DROP INDEX IF EXISTS events_by_time;
