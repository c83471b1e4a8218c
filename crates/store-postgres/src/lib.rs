//! The PostgreSQL store of sessiond, for several sessiond instances sharing one database.
//!
//! [`PostgresStore`] implements [`sessiond_core::store::Store`]. Unlike the SQLite store, where
//! one writer connection serialises every write of a process, here any number of connections in
//! any number of processes write at once, so every guarantee of the trait has to hold between
//! concurrent transactions. Every method is one transaction (an explicit one, or a single
//! statement), so nothing is ever half-written, and every write transaction runs at READ
//! COMMITTED, asked for explicitly (by `BEGIN`, and for single statements by the connection's
//! `default_transaction_isolation`). The reasoning below rests on one property of that level: an
//! `UPDATE`, `DELETE` or `SELECT … FOR UPDATE` that finds its row locked by another transaction
//! waits for it, and then evaluates its `WHERE` again against the version that transaction
//! committed (PostgreSQL's "EvalPlanQual" re-check). A condition such as `spent_at IS NULL` on
//! the row being changed is therefore a true compare-and-swap; a condition read from another
//! table, or from rows merely selected, is only as fresh as the statement's snapshot and is
//! never relied on alone.
//!
//! Why each operation is exact across instances:
//!
//! - **`rotate_refresh_token`** is one statement (a chain of data-modifying CTEs) sent on its
//!   own, so it is its own transaction. Rotations that arrive together share it: the
//!   statement takes any number of rotations of distinct sessions, at most one per session
//!   (see `store::rotation` for how batches form). It first locks the sessions, in id order
//!   and only if unrevoked (`FOR UPDATE`); a batch skips a session another transaction holds
//!   (`SKIP LOCKED`) and writes that rotation again alone, so two rotations of a session queue
//!   there without holding up anyone else. It then
//!   spends each token only if `spent_at IS NULL`; a rotation that waited re-checks that
//!   against the winner's commit and matches nothing. Moving the session, inserting the
//!   successor, and writing the `session.refreshed` event and any audit row are each gated,
//!   per rotation, on the previous step's `RETURNING` rows, so a rotation that lost writes
//!   nothing at all, its neighbours in the statement are unaffected, and there is never
//!   anything to roll back. Two instances rotating one token get exactly one `Rotated`. A
//!   token that does not belong to `session_id` is `Lost` too.
//! - **`create_session`** takes a transaction-scoped advisory lock keyed by a hash of the user id
//!   before it counts, so creations for one user (from any instance) run one at a time, and each
//!   sees every session the previous ones committed. It also locks the user's active sessions
//!   (`FOR UPDATE`), so a concurrent rotation cannot change which one is least recently active,
//!   nor a concurrent revocation revoke one it is evicting. The per-user limit is therefore
//!   exact, and each evicted session gets exactly one audit event.
//! - **`revoke_session`** is an `UPDATE … WHERE revoked_at IS NULL RETURNING`. Of two instances
//!   revoking one session at once, the second waits for the first's row lock, re-checks, and
//!   matches nothing; only the transaction that changed the row writes the audit event.
//! - **`revoke_user_sessions`** takes the same per-user advisory lock (so it never interleaves
//!   with a creation's eviction, and the two never deadlock on each other's row locks) and
//!   revokes with one `UPDATE … WHERE revoked_at IS NULL RETURNING`; sessions that a concurrent
//!   `revoke_session` got to first fail the re-check and get no second audit event.
//! - **`purge`** deletes one batch in one statement, picking rows with `FOR UPDATE SKIP
//!   LOCKED`, so purgers on several instances take disjoint batches instead of waiting for each
//!   other.
//! - **`migrate`** takes a transaction-scoped advisory lock on a fixed key in each migration
//!   transaction before reading the applied version, so instances starting together apply each
//!   migration once; a schema newer than the build is refused. Each version is looked up by
//!   itself, so a migration numbered below one already applied is still applied.
//! - **Events** are written in the transaction of their change (the rotation statement has a
//!   step for `session.refreshed`). Their ids come from a sequence, taken before commit, so
//!   transactions commit out of id order; the cursor is therefore `(tx, id)`, `tx` being the
//!   writing transaction's id (`pg_current_xact_id()`), and `events_after` returns only events
//!   whose `tx` is below the oldest transaction still running (`pg_snapshot_xmin`). Every
//!   transaction that could still commit an event has a larger `tx`, so nothing ever appears
//!   before a cursor a reader has passed. The price is that a long transaction anywhere on the
//!   database server holds events back until it ends (sessiond's own are bounded by its
//!   statement and idle-in-transaction timeouts).
//! - **`seal_audit`** follows the same rule: it takes only audit rows below `pg_snapshot_xmin`,
//!   in `(tx, id)` order, under a per-schema transaction-level advisory lock taken with
//!   `pg_try_advisory_xact_lock` (an instance that finds it taken skips its turn); pruning takes
//!   the same lock and waits for it.
//! - **Signing keys**: a rotation, a retirement and the first key of an algorithm take a
//!   per-schema advisory lock, so a rotation is a compare-and-swap on the active key across
//!   instances. A statement-level trigger moves `signing_keys_version` on every change, which
//!   is what instances poll.
//!
//! Revocations also reach the other instances as they commit: each revoking transaction
//! queues a `pg_notify`, and [`PostgresStore::revocation_listener`] (the store's
//! `revocation_feed`) listens for them, reporting a resync after every (re)connection; see
//! the `feed` module for the payload and the per-schema filtering.
//!
//! Advisory locks are per database, so their keys include the current schema: deployments that
//! keep their tables in different schemas of one database never wait for each other.
//!
//! Locks are always taken in the same order (advisory lock, then session rows, then token rows),
//! and a statement that locks several sessions (a batch of rotations, an eviction, revoking a
//! user's or a device's sessions) locks them in id order, so these operations do not deadlock
//! one another (a purge takes its sessions with `SKIP LOCKED`, which never waits). Tokens carry
//! no foreign key to their session and no index by session (each was one more write per
//! rotation): a purge locks its sessions, then deletes each one's tokens by walking its chain
//! from `refresh_token_chains`, then the sessions, in one transaction. Should PostgreSQL still
//! abort a transaction (deadlock, serialization failure, statement timeout, shutdown), the error
//! is [`StoreError::Unavailable`] and nothing was written.
//!
//! A database in trouble costs a request bounded time (see [`PostgresSettings`]): the acquire
//! timeout bounds waiting for a connection, PostgreSQL's `statement_timeout` bounds a statement
//! (row-lock waits included), and an operation timeout measured in this process bounds the rest,
//! such as a server that stops answering altogether. Each ends as `Unavailable`.
//!
//! Round trips are what a request pays on a database across the network, so the refresh path
//! keeps them to two: `find_refresh_token` (one `SELECT` joining the token, its session and its
//! successor) and the rotation (one statement, above). Nothing else is sent on the caller's
//! behalf: the timeouts and the isolation level are startup options of each connection rather
//! than `SET`s, a pooled connection is pinged before use only when it sat idle for a second,
//! and sqlx keeps each statement prepared per connection (only its first use on a connection
//! pays a round trip to prepare it). sqlx 0.8 pings every connection as it returns to the pool
//! (off the caller's path, but the connection is busy for that round trip, and both processes
//! pay for it), so the token lookup, the one statement a refresh sends on its own, runs on up
//! to eight connections kept out of the pool (`store/lookups.rs`). (A refresh of a token the
//! same instance issued sends no lookup: `sessiond_core::fresh_tokens`.) One cost remains that
//! sqlx does not let us remove: it sends one request at a time on a connection, without
//! pipelining.
//!
//! [`PostgresStore::open`] connects but does not migrate; call [`PostgresStore::migrate`] (as
//! `serve` and `migrate` should) to bring the schema up to date. Keep sessiond's tables in a
//! database or schema of their own (`options=-c search_path=sessiond` in the URL): the table
//! names (`sessions`, `schema_migrations`, …) are common ones.
//!
//! One limit is inherent to a client-server database: if the connection is lost while `COMMIT`
//! is in flight, the client cannot know whether the transaction committed, and the operation
//! reports `Unavailable` either way.
//!
//! [`StoreError::Unavailable`]: sessiond_core::store::StoreError::Unavailable

mod error;
mod feed;
mod migrate;
mod rows;
mod store;

pub use feed::{PostgresRevocationFeed, REVOCATION_CHANNEL};
pub use migrate::MIGRATIONS;
pub use store::{PostgresSettings, PostgresStore};
