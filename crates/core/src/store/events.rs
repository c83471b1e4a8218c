//! The live events: a total order of the changes, for streams to tail and resume from.

use async_trait::async_trait;

use super::StoreError;
use crate::event::{EventCursor, EventFilter, StoredEvent};
use crate::time::Timestamp;

/// Persistent events, each written in the transaction of the change it describes.
///
/// What an implementer guarantees: an event never exists without its change nor a change
/// without its event; cursors grow in the order readers see events, and an event is returned
/// only once no transaction can still commit one at or before its cursor, so a reader resuming
/// from its last cursor misses nothing and sees nothing twice.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// At most `limit` stored events after `after` that pass `filter`, in cursor order.
    ///
    /// What an implementer must guarantee: an event is returned only once its position is
    /// final, that is once no transaction can still commit an event at or before its cursor.
    /// A reader that resumes from the last cursor it saw therefore misses nothing. Every event
    /// is written by [`Store`](super::Store) methods in the transaction of the change it describes: one per
    /// [`crate::event::events_of_audit`] result of each audit event appended, and a
    /// `session.refreshed` for each successful rotation.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn events_after(
        &self,
        after: EventCursor,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// The cursor of the newest event whose position is final ([`EventCursor::START`] when
    /// there is none): where a reader that wants only new events starts.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn latest_event_cursor(&self) -> Result<EventCursor, StoreError>;

    /// Deletes at most `batch` events that happened before `before`; returns how many. A store
    /// that numbers each event after its newest one may keep that one whatever its time, so
    /// that no cursor is handed out twice.
    ///
    /// # Errors
    /// [`StoreError`].
    async fn purge_events(&self, before: Timestamp, batch: u32) -> Result<u64, StoreError>;
}
