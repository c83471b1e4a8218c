//! How a storage operation fails, shared by every store trait and by the domain's errors.

/// A boxed error of a storage backend, kept as the source of a [`StoreError`].
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a storage operation failed. In every case nothing was half-written: the operation
/// either committed whole or not at all. One case stays undecidable for a networked store: a
/// connection lost while its COMMIT was in flight, reported as [`StoreError::Unavailable`],
/// may have committed. Retrying is safe for rotations (a replay inside the grace window gets
/// the same successor) and for revocations (idempotent); a retried session creation may
/// create a second session.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or is overloaded; the operation may succeed if retried.
    #[error("storage is unavailable")]
    Unavailable(#[source] BackendError),
    /// The backend refused the operation.
    #[error("storage operation failed")]
    Backend(#[source] BackendError),
    /// A stored row cannot be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Why storage cannot write, when that is what this error reports (see [`CannotWrite`]).
    pub fn cannot_write(&self) -> Option<&CannotWrite> {
        match self {
            Self::Unavailable(source) => source.downcast_ref::<CannotWrite>(),
            _ => None,
        }
    }

    /// A copy for a second requester of the same outcome (the commit of a batch, a count
    /// shared by its callers): the same variant and message, and the same [`CannotWrite`].
    #[must_use]
    pub fn duplicate(&self) -> Self {
        if let Some(cannot) = self.cannot_write() {
            return Self::Unavailable(Box::new(cannot.clone()));
        }
        match self {
            Self::Unavailable(source) => Self::Unavailable(source.to_string().into()),
            Self::Backend(source) => Self::Backend(source.to_string().into()),
            Self::Corrupt(message) => Self::Corrupt(message.clone()),
        }
    }
}

/// What keeps a store that answers from writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteBlock {
    /// The disk (or the database's size limit) is full.
    DiskFull,
    /// The database, its file or its file system accepts only reads.
    ReadOnly,
    /// Writing failed with an I/O error.
    IoError,
}

impl WriteBlock {
    /// The stable code readiness reports (`disk_full`, `read_only`, `io_error`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DiskFull => "disk_full",
            Self::ReadOnly => "read_only",
            Self::IoError => "io_error",
        }
    }
}

impl std::fmt::Display for WriteBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The source of the [`StoreError::Unavailable`] a store's health check returns while it
/// answers but cannot write: its writes fail until space, permission or the device comes back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage cannot write ({reason}): {detail}")]
pub struct CannotWrite {
    /// What blocks writes.
    pub reason: WriteBlock,
    /// The backend's own words, for the log.
    pub detail: String,
}
