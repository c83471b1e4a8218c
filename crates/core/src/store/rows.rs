//! Decoding what both SQL stores read alike: a session and a device of the registry, each from
//! its columns in one order, which each store's queries name (its `session_columns!` macro and
//! device queries).
//!
//! A store only says how to read one column of its driver's row ([`Columns`]). Which column
//! holds what, which columns are sealed and under which row, and what a sealed value that does
//! not open becomes (absent, its column named in `unreadable`) are decided here, once for both.

use serde_json::{Map, Value};

use crate::crypt::columns::{
    DEVICE_LAST_IP, DEVICE_NAME, DEVICE_USER_AGENT, SESSION_DEVICE_NAME, SESSION_IP,
    SESSION_METADATA, SESSION_USER_AGENT,
};
use crate::crypt::{CipherSlot, device_row};
use crate::device::DeviceRecord;
use crate::session::{Device, DeviceType, Session};
use crate::store::StoreError;
use crate::{DeviceId, SessionId, TenantId, Timestamp, UserId};

/// One row of a SQL store, read by column index. Each method is a store error when the column
/// is missing or holds another type.
pub trait Columns {
    /// Column `index` as text.
    fn text(&self, index: usize) -> Result<String, StoreError>;
    /// Column `index` as text, or `None` for NULL.
    fn optional_text(&self, index: usize) -> Result<Option<String>, StoreError>;
    /// Column `index` as milliseconds since the Unix epoch.
    fn millis(&self, index: usize) -> Result<i64, StoreError>;
    /// Column `index` as milliseconds since the Unix epoch, or `None` for NULL.
    fn optional_millis(&self, index: usize) -> Result<Option<i64>, StoreError>;
    /// Column `index` as a flag, however the store keeps one.
    fn flag(&self, index: usize) -> Result<bool, StoreError>;
    /// Column `index` as a session id, with the text of it that the session's sealed columns
    /// are bound to ([`CipherSlot`] associated data).
    fn session_id(&self, index: usize) -> Result<(SessionId, String), StoreError>;

    /// Column `index` as a timestamp.
    fn timestamp(&self, index: usize) -> Result<Timestamp, StoreError> {
        self.millis(index).map(Timestamp::from_unix_millis)
    }
}

/// A JSON object kept as text in `column`; corrupt if it is anything else.
///
/// # Errors
/// [`StoreError::Corrupt`] naming the column.
pub fn json_object(text: &str, column: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(text)
        .map_err(|_| StoreError::Corrupt(format!("column {column} is not a JSON object")))
}

/// A session from the 21 columns starting at `offset`: id, user_id, tenant_id, device_id,
/// device_name, device_type, browser, os, ip, user_agent, claims, metadata, created_at,
/// last_active_at, idle_expires_at, expires_at, access_expires_at, revoked_at, revoke_reason,
/// whether its device is trusted, dpop_jkt.
///
/// A sealed value that does not open reads as absent and is named in `unreadable`: the rest
/// of the session (its revocation above all) does not depend on it.
///
/// # Errors
/// A store error from a column, or [`StoreError::Corrupt`] for claims or metadata that are not
/// a JSON object.
pub fn session(
    row: &impl Columns,
    offset: usize,
    cipher: &CipherSlot,
) -> Result<Session, StoreError> {
    let text = |index: usize| row.text(offset + index);
    let optional = |index: usize| row.optional_text(offset + index);
    let timestamp = |index: usize| row.timestamp(offset + index);
    let (id, id_text) = row.session_id(offset)?;
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
        id,
        user_id: UserId::from_trusted(text(1)?),
        tenant_id: optional(2)?.map(TenantId::from_trusted),
        device: Device {
            id: DeviceId::from_trusted(text(3)?),
            name: device_name,
            device_type: DeviceType::from_name(&text(5)?),
            browser: optional(6)?,
            os: optional(7)?,
            trusted: row.flag(offset + 19)?,
        },
        ip,
        user_agent,
        claims: json_object(&text(10)?, "claims")?,
        metadata: match metadata {
            Some(metadata) => json_object(&metadata, "metadata")?,
            None => Map::new(),
        },
        created_at: timestamp(12)?,
        last_active_at: timestamp(13)?,
        idle_expires_at: timestamp(14)?,
        expires_at: timestamp(15)?,
        access_expires_at: timestamp(16)?,
        revoked_at: row
            .optional_millis(offset + 17)?
            .map(Timestamp::from_unix_millis),
        revoke_reason: optional(18)?,
        dpop_jkt: optional(20)?,
        unreadable,
    })
}

/// A device of the registry from columns 0 to 10: user_id, device_id, name, device_type,
/// browser, os, trusted, user_agent, last_ip, first_seen_at, last_seen_at. Sealed values that
/// do not open read as absent, named in `unreadable`.
///
/// # Errors
/// A store error from a column.
pub fn device(row: &impl Columns, cipher: &CipherSlot) -> Result<DeviceRecord, StoreError> {
    let (user_id, device_id) = (row.text(0)?, row.text(1)?);
    let key = device_row(&user_id, &device_id);
    let mut unreadable = Vec::new();
    let mut open = |column: &'static str, index: usize| -> Result<Option<String>, StoreError> {
        Ok(cipher.open_text_or_note(column, &key, row.optional_text(index)?, &mut unreadable))
    };
    let name = open(DEVICE_NAME, 2)?;
    let user_agent = open(DEVICE_USER_AGENT, 7)?;
    let last_ip = open(DEVICE_LAST_IP, 8)?;
    Ok(DeviceRecord {
        user_id: UserId::from_trusted(user_id),
        device: Device {
            id: DeviceId::from_trusted(device_id),
            name,
            device_type: DeviceType::from_name(&row.text(3)?),
            browser: row.optional_text(4)?,
            os: row.optional_text(5)?,
            trusted: row.flag(6)?,
        },
        user_agent,
        last_ip,
        first_seen_at: row.timestamp(9)?,
        last_seen_at: row.timestamp(10)?,
        unreadable,
    })
}
