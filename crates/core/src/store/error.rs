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
