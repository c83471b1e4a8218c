//! Decoding rows into domain values.

use rusqlite::Row;
use serde_json::{Map, Value};
use sessiond_core::crypt::CipherSlot;
use sessiond_core::crypt::columns::{
    DEVICE_LAST_IP, DEVICE_NAME, DEVICE_USER_AGENT, SESSION_DEVICE_NAME, SESSION_IP,
    SESSION_METADATA, SESSION_USER_AGENT,
};
use sessiond_core::crypt::device_row;
use sessiond_core::device::DeviceRecord;
use sessiond_core::event::{self, EventCursor, StoredEvent};
use sessiond_core::session::{Device, DeviceType, Session};
use sessiond_core::store::{RevokedSessionRef, StoreError};
use sessiond_core::{DeviceId, SessionId, TenantId, Timestamp, UserId};
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

fn json_object(text: &str, column: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(text)
        .map_err(|_| StoreError::Corrupt(format!("column {column} is not a JSON object")))
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

/// Reads a session from the columns starting at `offset`.
pub(crate) fn session(
    row: &Row<'_>,
    offset: usize,
    cipher: &CipherSlot,
) -> Result<Session, StoreError> {
    let text = |index: usize| -> Result<String, StoreError> { get(row, offset + index) };
    let optional =
        |index: usize| -> Result<Option<String>, StoreError> { get(row, offset + index) };
    let id_text = text(0)?;
    let id = session_id(&id_text)?;
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
    let revoked_at: Option<i64> = get(row, offset + 17)?;
    Ok(Session {
        id,
        user_id: UserId::from_trusted(text(1)?),
        tenant_id: optional(2)?.map(TenantId::from_trusted),
        device: Device {
            id: DeviceId::from_trusted(text(3)?),
            name: device_name,
            device_type: DeviceType::from_name(&text(5)?),
            browser: optional(6)?,
            os: optional(7)?,
            trusted: get::<i64>(row, offset + 19)? != 0,
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
        revoked_at: revoked_at.map(Timestamp::from_unix_millis),
        revoke_reason: optional(18)?,
        dpop_jkt: optional(20)?,
        unreadable,
    })
}

/// A device of the registry: user_id, device_id, name, device_type, browser, os, trusted,
/// user_agent, last_ip, first_seen_at, last seen.
pub(crate) fn device(row: &Row<'_>, cipher: &CipherSlot) -> Result<DeviceRecord, StoreError> {
    let text = |index: usize| -> Result<String, StoreError> { get(row, index) };
    let optional = |index: usize| -> Result<Option<String>, StoreError> { get(row, index) };
    let trusted: i64 = get(row, 6)?;
    let (user_id, device_id) = (text(0)?, text(1)?);
    let key = device_row(&user_id, &device_id);
    let mut unreadable = Vec::new();
    let mut open = |column: &'static str, index: usize| -> Result<Option<String>, StoreError> {
        Ok(cipher.open_text_or_note(column, &key, optional(index)?, &mut unreadable))
    };
    let name = open(DEVICE_NAME, 2)?;
    let user_agent = open(DEVICE_USER_AGENT, 7)?;
    let last_ip = open(DEVICE_LAST_IP, 8)?;
    Ok(DeviceRecord {
        user_id: UserId::from_trusted(user_id),
        device: Device {
            id: DeviceId::from_trusted(device_id),
            name,
            device_type: DeviceType::from_name(&text(3)?),
            browser: optional(4)?,
            os: optional(5)?,
            trusted: trusted != 0,
        },
        user_agent,
        last_ip,
        first_seen_at: timestamp(row, 9)?,
        last_seen_at: timestamp(row, 10)?,
        unreadable,
    })
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
