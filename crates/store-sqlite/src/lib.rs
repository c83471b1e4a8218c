//! The embedded SQLite store of sessiond.
//!
//! One file, in WAL mode. Writes go through a single connection, so they queue inside the
//! process instead of contending for SQLite's write lock (no "database is locked" under load),
//! and each write transaction starts with `BEGIN IMMEDIATE`, so a second process (the
//! `sessiond` command acting on a running server's file) waits for the lock up to the busy
//! timeout rather than failing on a lock upgrade. Refresh-token rotations, the hot write, are
//! group-committed (see `rotation_batch`). Reads use a small pool of read-only connections that
//! never block the writer.

mod error;
mod migrate;
mod rotation_batch;
mod rows;
mod store;

pub use migrate::MIGRATIONS;
pub use store::{SqliteSettings, SqliteStore, Synchronous};
