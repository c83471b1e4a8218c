//! Mapping SQLite failures to the store's error variants.

use rusqlite::ErrorCode;
use sessiond_core::store::{CannotWrite, StoreError, WriteBlock};

/// Whether a failure with this code may pass by itself: a lock held past the busy timeout, a
/// full disk, an I/O error, a file made read-only, or memory that ran out. Such failures are
/// answered as unavailable (503, retry later), never as a server error.
fn is_transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::OutOfMemory
            | ErrorCode::FileLockingProtocolFailed
    )
}

pub(crate) fn store_error(error: rusqlite::Error) -> StoreError {
    let transient = match &error {
        rusqlite::Error::SqliteFailure(failure, _) => is_transient(failure.code),
        _ => false,
    };
    if transient {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Backend(Box::new(error))
    }
}

/// The same classification for a failure shared by several requests (a failed commit), each
/// of which gets its own error value.
pub(crate) fn shared_failure(error: &rusqlite::Error) -> StoreError {
    let message = format!("the write transaction failed: {error}");
    if let Some(reason) = write_block(error) {
        return StoreError::Unavailable(Box::new(CannotWrite {
            reason,
            detail: message,
        }));
    }
    match error {
        rusqlite::Error::SqliteFailure(failure, _) if is_transient(failure.code) => {
            StoreError::Unavailable(message.into())
        }
        _ => StoreError::Backend(message.into()),
    }
}

/// What keeps the database from writing, when `error` says so: a full disk (or the size limit
/// reached), a read-only file or file system, an I/O error.
pub(crate) fn write_block(error: &rusqlite::Error) -> Option<WriteBlock> {
    match error {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DiskFull => Some(WriteBlock::DiskFull),
            ErrorCode::ReadOnly => Some(WriteBlock::ReadOnly),
            ErrorCode::SystemIoFailure | ErrorCode::CannotOpen => Some(WriteBlock::IoError),
            _ => None,
        },
        _ => None,
    }
}

/// [`write_block`] of the SQLite error a store error carries, if it carries one.
pub(crate) fn write_block_of(error: &StoreError) -> Option<WriteBlock> {
    match error {
        StoreError::Unavailable(source) => source
            .downcast_ref::<rusqlite::Error>()
            .and_then(write_block)
            .or_else(|| {
                source
                    .downcast_ref::<CannotWrite>()
                    .map(|cannot| cannot.reason)
            }),
        _ => None,
    }
}
