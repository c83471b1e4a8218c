//! Mapping SQLite failures to the store's error variants.

use sessiond_core::store::StoreError;

/// SQLITE_BUSY and SQLITE_LOCKED: another connection holds the lock past the busy timeout.
const BUSY_CODES: [&str; 2] = ["5", "6"];

pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    let transient = match &error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(database) => database
            .code()
            .is_some_and(|code| BUSY_CODES.contains(&code.as_ref())),
        _ => false,
    };
    if transient {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Backend(Box::new(error))
    }
}
