//! Decoding rows into domain values.

use rusqlite::Row;
use serde_json::Value;
use sessiond_core::crypt::CipherSlot;
use sessiond_core::device::DeviceRecord;
use sessiond_core::event::{self, EventCursor, StoredEvent};
use sessiond_core::session::Session;
use sessiond_core::store::rows as shared;
use sessiond_core::store::{RevokedSessionRef, StoreError};
use sessiond_core::{SessionId, Timestamp, UserId};
use uuid::Uuid;

use crate::error::store_error;

/// The session columns, in the order [`session`] reads them; prefixed by the alias `s`.
macro_rules! session_columns {
    () => {
        "s.id, s.user_id, s.tenant_id, s.device_id, s.device_name, s.device_type, s.browser, \
         s.os, s.ip, s.user_agent, s.claims, s.metadata, s.created_at, s.last_active_at, \
         s.idle_expires_at, s.expires_at, s.access_expires_at, s.revoked_at, s.revoke_reason, \
         COALESCE((SELECT d.trusted FROM devices d \
                   WHERE d.user_id = s.user_id AND d.device_id = s.device_id), 0), \
         s.dpop_jkt"
    };
}
pub(crate) use session_columns;

/// The number of columns [`session_columns`] names.
pub(crate) const SESSION_COLUMN_COUNT: usize = 21;

/// Column `index` of `row`, a store error if it has another type.
pub(crate) fn get<T: rusqlite::types::FromSql>(
    row: &Row<'_>,
    index: usize,
) -> Result<T, StoreError> {
    row.get(index).map_err(store_error)
}

fn timestamp(row: &Row<'_>, index: usize) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::from_unix_millis(get(row, index)?))
}

/// A session id as stored (lower-case hyphenated UUID text).
pub(crate) fn session_id(text: &str) -> Result<SessionId, StoreError> {
    Uuid::try_parse(text)
        .map(SessionId::from_uuid)
        .map_err(|_| StoreError::Corrupt("session id is not a UUID".into()))
}

/// A row of the store as the decoders shared with the other SQL store read it: flags are
/// integers, session ids hyphenated UUID text.
struct Columns<'a, 'b>(&'a Row<'b>);

impl shared::Columns for Columns<'_, '_> {
    fn text(&self, index: usize) -> Result<String, StoreError> {
        get(self.0, index)
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, StoreError> {
        get(self.0, index)
    }

    fn millis(&self, index: usize) -> Result<i64, StoreError> {
        get(self.0, index)
    }

    fn optional_millis(&self, index: usize) -> Result<Option<i64>, StoreError> {
        get(self.0, index)
    }

    fn flag(&self, index: usize) -> Result<bool, StoreError> {
        Ok(get::<i64>(self.0, index)? != 0)
    }

    fn session_id(&self, index: usize) -> Result<(SessionId, String), StoreError> {
        let text: String = get(self.0, index)?;
        Ok((session_id(&text)?, text))
    }
}

/// Reads a session from the columns starting at `offset` (see [`shared::session`]).
pub(crate) fn session(
    row: &Row<'_>,
    offset: usize,
    cipher: &CipherSlot,
) -> Result<Session, StoreError> {
    shared::session(&Columns(row), offset, cipher)
}

/// A device of the registry (see [`shared::device`]).
pub(crate) fn device(row: &Row<'_>, cipher: &CipherSlot) -> Result<DeviceRecord, StoreError> {
    shared::device(&Columns(row), cipher)
}

/// An event: id, type, user_id, session_id, at, data.
pub(crate) fn event(row: &Row<'_>) -> Result<StoredEvent, StoreError> {
    let kind: String = get(row, 1)?;
    let session: Option<String> = get(row, 3)?;
    let data: String = get(row, 5)?;
    Ok(StoredEvent {
        cursor: EventCursor {
            epoch: 0,
            sequence: get(row, 0)?,
        },
        kind: event::event_type(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown event type {kind:?}")))?,
        user_id: UserId::from_trusted(get(row, 2)?),
        session_id: session
            .map(|id| {
                session_id(&id)
                    .map_err(|_| StoreError::Corrupt("event session id is not a UUID".into()))
            })
            .transpose()?,
        at: timestamp(row, 4)?,
        data: match serde_json::from_str(&data) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(StoreError::Corrupt(
                    "event data is not a JSON object".into(),
                ));
            }
        },
    })
}

/// A revoked session: id, revoked_at, access_expires_at.
pub(crate) fn revoked_ref(row: &Row<'_>) -> Result<RevokedSessionRef, StoreError> {
    let id: String = get(row, 0)?;
    Ok(RevokedSessionRef {
        id: session_id(&id)?,
        revoked_at: timestamp(row, 1)?,
        access_expires_at: timestamp(row, 2)?,
    })
}
