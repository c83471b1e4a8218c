//! Mapping PostgreSQL failures to the store's error variants.
//!
//! `Unavailable` means "retry later and it may work": the database cannot be reached, is
//! shutting down or overloaded, gave up on a statement that ran too long, or aborted the
//! transaction to break a deadlock or a serialization conflict. In every one of those cases the
//! transaction was rolled back. Everything else (a constraint violation, a type mismatch, a
//! malformed URL) is `Backend`: retrying would fail the same way.

use std::sync::Arc;
use std::time::Duration;

use sessiond_core::store::StoreError;

/// SQLSTATE codes after which the same operation may succeed if retried.
const TRANSIENT_CODES: &[&str] = &[
    // serialization_failure and deadlock_detected: the transaction was chosen as the victim.
    "40001", "40P01", //
    // lock_not_available: a `lock_timeout` expired.
    "55P03", //
    // query_canceled: `statement_timeout` expired (or an administrator cancelled the query).
    "57014", //
    // admin_shutdown, crash_shutdown, cannot_connect_now (starting up or shutting down).
    "57P01", "57P02", "57P03", //
    // idle_session_timeout and idle_in_transaction_session_timeout: the server dropped us.
    "57P05", "25P03", //
    // read_only_sql_transaction: connected to a standby, as happens for a moment after a
    // failover until the pool reconnects to the new primary.
    "25006", //
    // io_error: the server could not read or write its files.
    "58030",
];

/// SQLSTATE classes after which the same operation may succeed if retried: `08` connection
/// exceptions and `53` insufficient resources (too many connections, out of memory, disk full).
const TRANSIENT_CLASSES: &[&str] = &["08", "53"];

fn is_transient_code(code: &str) -> bool {
    TRANSIENT_CODES.contains(&code)
        || TRANSIENT_CLASSES
            .iter()
            .any(|class| code.starts_with(class))
}

/// Maps a driver error to [`StoreError`], keeping it as the source.
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    if is_transient(&error) {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Backend(Box::new(error))
    }
}

/// Maps one driver error that several operations share (the rotations of one batch) to
/// [`StoreError`], each keeping it as the source.
pub(crate) fn shared_store_error(error: &Arc<sqlx::Error>) -> StoreError {
    let shared = Box::new(Shared(Arc::clone(error)));
    if is_transient(error) {
        StoreError::Unavailable(shared)
    } else {
        StoreError::Backend(shared)
    }
}

/// Whether the same operation may succeed if retried.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database
            .code()
            .is_some_and(|code| is_transient_code(code.as_ref())),
        _ => false,
    }
}

/// A driver error answered to several operations.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct Shared(Arc<sqlx::Error>);

/// An operation that got no answer within the store's operation timeout.
#[derive(Debug, thiserror::Error)]
#[error("postgresql did not answer within {0:?}")]
pub(crate) struct NoAnswer(pub(crate) Duration);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_sqlstates_are_recognised_and_others_are_not() {
        for code in [
            "40001", "40P01", "57014", "57P01", "57P03", "53300", "08006", "08001",
        ] {
            assert!(is_transient_code(code), "{code} should be transient");
        }
        for code in ["23505", "23503", "42P01", "22P02", "XX000"] {
            assert!(!is_transient_code(code), "{code} should not be transient");
        }
    }

    #[test]
    fn pool_timeouts_and_io_errors_are_unavailable() {
        assert!(matches!(
            store_error(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(
            store_error(sqlx::Error::Io(io)),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            store_error(sqlx::Error::RowNotFound),
            StoreError::Backend(_)
        ));
    }
}
