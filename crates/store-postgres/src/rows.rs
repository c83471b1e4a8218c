//! Decoding rows into domain values.

use serde_json::{Map, Value};
use sessiond_core::crypt::CipherSlot;
use sessiond_core::device::DeviceRecord;
use sessiond_core::session::Session;
use sessiond_core::store::StoreError;
use sessiond_core::store::rows as shared;
use sessiond_core::{SessionId, Timestamp};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::store_error;

/// The session columns, in the order [`session`] reads them; prefixed by the alias `s`.
macro_rules! session_columns {
    () => {
        "s.id, s.user_id, s.tenant_id, s.device_id, s.device_name, s.device_type, s.browser, \
         s.os, s.ip, s.user_agent, s.claims, s.metadata, s.created_at, s.last_active_at, \
         s.idle_expires_at, s.expires_at, s.access_expires_at, s.revoked_at, s.revoke_reason, \
         COALESCE((SELECT d.trusted FROM devices d \
                   WHERE d.user_id = s.user_id AND d.device_id = s.device_id), FALSE), \
         s.dpop_jkt"
    };
}
pub(crate) use session_columns;

/// The number of columns [`session_columns`] names.
pub(crate) const SESSION_COLUMN_COUNT: usize = 21;

/// Serialises a JSON object for a TEXT column.
pub(crate) fn json_text(object: &Map<String, Value>) -> Result<String, StoreError> {
    serde_json::to_string(object).map_err(|error| StoreError::Backend(Box::new(error)))
}

pub(crate) fn timestamp(row: &PgRow, index: usize) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::from_unix_millis(
        row.try_get(index).map_err(store_error)?,
    ))
}

pub(crate) fn optional_timestamp(
    row: &PgRow,
    index: usize,
) -> Result<Option<Timestamp>, StoreError> {
    let millis: Option<i64> = row.try_get(index).map_err(store_error)?;
    Ok(millis.map(Timestamp::from_unix_millis))
}

/// A row of the store as the decoders shared with the other SQL store read it: flags are
/// booleans, session ids UUIDs.
struct Columns<'a>(&'a PgRow);

impl shared::Columns for Columns<'_> {
    fn text(&self, index: usize) -> Result<String, StoreError> {
        self.0.try_get(index).map_err(store_error)
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, StoreError> {
        self.0.try_get(index).map_err(store_error)
    }

    fn millis(&self, index: usize) -> Result<i64, StoreError> {
        self.0.try_get(index).map_err(store_error)
    }

    fn optional_millis(&self, index: usize) -> Result<Option<i64>, StoreError> {
        self.0.try_get(index).map_err(store_error)
    }

    fn flag(&self, index: usize) -> Result<bool, StoreError> {
        self.0.try_get(index).map_err(store_error)
    }

    fn session_id(&self, index: usize) -> Result<(SessionId, String), StoreError> {
        let id: Uuid = self.0.try_get(index).map_err(store_error)?;
        Ok((SessionId::from_uuid(id), id.to_string()))
    }
}

/// Reads a session from the columns starting at `offset` (see [`shared::session`]).
pub(crate) fn session(
    row: &PgRow,
    offset: usize,
    cipher: &CipherSlot,
) -> Result<Session, StoreError> {
    shared::session(&Columns(row), offset, cipher)
}

/// A device of the registry (see [`shared::device`]).
pub(crate) fn device(row: &PgRow, cipher: &CipherSlot) -> Result<DeviceRecord, StoreError> {
    shared::device(&Columns(row), cipher)
}

/// Reads every row of `rows` as a session starting at column 0.
pub(crate) fn sessions(rows: &[PgRow], cipher: &CipherSlot) -> Result<Vec<Session>, StoreError> {
    rows.iter().map(|row| session(row, 0, cipher)).collect()
}
