//! Integration tests of the PostgreSQL store, against the server named by
//! `SESSIOND_TEST_DATABASE_URL` (for example `postgres://postgres@127.0.0.1:5432/test`).
//!
//! Each test works in a schema of its own, created for it and dropped after it, so tests run in
//! parallel against one database. Several `PostgresStore`s on one schema stand for several
//! sessiond instances sharing a database. When the variable is unset, each test that needs the
//! server says it was skipped and passes.

#![allow(clippy::unwrap_used)]

// Every store-level case of the conformance suite, on a fresh schema each. The modules below
// hold only what is PostgreSQL's own: its migrations, its revocation feed, its behaviour when
// the server is unreachable, and sealing around transactions still open.
mod conformance {
    sessiond_store_conformance::conformance_suite!(crate::helpers::TestDb);
}

mod audit;
mod availability;
mod feed;
mod helpers;
mod migrations;
mod rotation;
