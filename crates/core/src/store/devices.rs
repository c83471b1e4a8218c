//! The registry of each user's devices.

use async_trait::async_trait;

use super::{AuditFor, Revocation, StoreError};
use crate::audit::NewAuditEvent;
use crate::device::DeviceRecord;
use crate::ids::{DeviceId, UserId};
use crate::session::Session;

/// Each user's devices, keyed by user *and* device id.
///
/// What an implementer guarantees: a device id never reaches another user's device (every
/// method is scoped to one user); a device is recorded by
/// [`SessionStore::create_session`](super::SessionStore::create_session), in the session's
/// transaction; a change to a device and its audit event (and the revocations forgetting a
/// device implies) commit together or not at all.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// The devices in `user`'s registry, most recently seen first. A device's `last_seen_at`
    /// is the latest activity of any of its sessions.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Marks `user`'s device `device` trusted or not, appending `audit`; `false` when the user
    /// has no such device (nothing is written then).
    ///
    /// # Errors
    /// [`StoreError`].
    async fn set_device_trusted(
        &self,
        user: &UserId,
        device: &DeviceId,
        trusted: bool,
        audit: &NewAuditEvent,
    ) -> Result<bool, StoreError>;

    /// Removes `user`'s device `device` from the registry and revokes its active sessions
    /// (appending `audit` and `revoke_audit` for each), in one transaction. Returns the
    /// sessions revoked, or `None` when the user has no such device (nothing is written then).
    ///
    /// # Errors
    /// [`StoreError`].
    async fn forget_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        revocation: Revocation,
        audit: &NewAuditEvent,
        revoke_audit: AuditFor<'_>,
    ) -> Result<Option<Vec<Session>>, StoreError>;
}
