//! Decoding rows into domain values.

use serde_json::{Map, Value};
use sessiond_core::crypt::CipherSlot;
use sessiond_core::crypt::columns::{
    SESSION_DEVICE_NAME, SESSION_IP, SESSION_METADATA, SESSION_USER_AGENT,
};
use sessiond_core::session::{Device, DeviceType, Session};
use sessiond_core::store::StoreError;
use sessiond_core::{DeviceId, SessionId, TenantId, Timestamp, UserId};
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

fn json_object(text: &str, column: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(text)
        .map_err(|_| StoreError::Corrupt(format!("column {column} is not a JSON object")))
}

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

/// Reads a session from the columns starting at `offset`.
pub(crate) fn session(
    row: &PgRow,
    offset: usize,
    cipher: &CipherSlot,
) -> Result<Session, StoreError> {
    let text = |index: usize| -> Result<String, StoreError> {
        row.try_get(offset + index).map_err(store_error)
    };
    let optional = |index: usize| -> Result<Option<String>, StoreError> {
        row.try_get(offset + index).map_err(store_error)
    };
    let id: Uuid = row.try_get(offset).map_err(store_error)?;
    let id_text = id.to_string();
    // A value that does not open reads as absent and is named in `unreadable`: the rest of the
    // session (its revocation above all) must not depend on it.
    let mut unreadable = Vec::new();
    let mut open = |column: &'static str, index: usize| -> Result<Option<String>, StoreError> {
        Ok(cipher.open_text_or_note(
            column,
            id_text.as_bytes(),
            optional(index)?,
            &mut unreadable,
        ))
    };
    let device_name = open(SESSION_DEVICE_NAME, 4)?;
    let ip = open(SESSION_IP, 8)?;
    let user_agent = open(SESSION_USER_AGENT, 9)?;
    let metadata = open(SESSION_METADATA, 11)?;
    Ok(Session {
        id: SessionId::from_uuid(id),
        user_id: UserId::from_trusted(text(1)?),
        tenant_id: optional(2)?.map(TenantId::from_trusted),
        device: Device {
            id: DeviceId::from_trusted(text(3)?),
            name: device_name,
            device_type: DeviceType::from_name(&text(5)?),
            browser: optional(6)?,
            os: optional(7)?,
            trusted: row.try_get(offset + 19).map_err(store_error)?,
        },
        ip,
        user_agent,
        claims: json_object(&text(10)?, "claims")?,
        metadata: match metadata {
            Some(metadata) => json_object(&metadata, "metadata")?,
            None => Map::new(),
        },
        created_at: timestamp(row, offset + 12)?,
        last_active_at: timestamp(row, offset + 13)?,
        idle_expires_at: timestamp(row, offset + 14)?,
        expires_at: timestamp(row, offset + 15)?,
        access_expires_at: timestamp(row, offset + 16)?,
        revoked_at: optional_timestamp(row, offset + 17)?,
        revoke_reason: optional(18)?,
        dpop_jkt: optional(20)?,
        unreadable,
    })
}

/// Reads every row of `rows` as a session starting at column 0.
pub(crate) fn sessions(rows: &[PgRow], cipher: &CipherSlot) -> Result<Vec<Session>, StoreError> {
    rows.iter().map(|row| session(row, 0, cipher)).collect()
}
