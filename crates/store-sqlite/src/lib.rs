//! The embedded SQLite store of sessiond.
//!
//! One file, in WAL mode, behind one storage thread (`engine`). Every write of the process is
//! a job for that thread, which commits whatever has queued since it last woke in one
//! transaction (group commit: one WAL sync for many rotations, creations and revocations), and
//! each transaction starts with `BEGIN IMMEDIATE`, so a second process (the `sessiond`
//! command acting on a running server's file) waits for the lock up to the busy timeout rather
//! than failing on a lock upgrade. The lookups of the refresh path run on the same thread,
//! whose page cache no other connection of the process invalidates; long reads use a small
//! pool of read-only connections that never block the writer. The audit chain is extended as
//! audit rows are written, in commit order.
//!
//! Commit order is also the order of live events: an event's cursor is its row id (epoch 0),
//! and since every transaction of the file holds the write lock from `BEGIN IMMEDIATE` to
//! `COMMIT`, ids are assigned in commit order and a reader never sees a smaller id appear after
//! a larger one.

mod backup;
mod engine;
mod error;
mod migrate;
mod rows;
mod store;
mod syncer;
#[cfg(test)]
mod test_support;

pub use backup::{BackupError, backup};
pub use migrate::MIGRATIONS;
pub use store::{SqliteSettings, SqliteStore, Synchronous};
