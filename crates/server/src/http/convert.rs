//! From domain values to wire bodies.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use sessiond_core::crypt::columns::{
    DEVICE_LAST_IP, DEVICE_NAME, DEVICE_USER_AGENT, SESSION_DEVICE_NAME, SESSION_IP,
    SESSION_METADATA, SESSION_USER_AGENT,
};
use sessiond_core::device::DeviceRecord;
use sessiond_core::refresh::IssuedPair;
use sessiond_core::service::IssuedSession;
use sessiond_core::{Session, SessionId, Timestamp};
use sessiond_wire::{DeviceView, RegisteredDeviceView, SessionView, TokenPairResponse};

/// Room for a token pair's answer: its access token (about 300 bytes with EdDSA, 450 with
/// RS256), its refresh token and the session view come to about 1.2 KB.
pub(crate) const TOKEN_PAIR_ANSWER_BYTES: usize = 2048;

/// `value` as a `200` JSON answer, written into one buffer of `capacity` bytes to begin with.
/// axum's `Json` starts from 128 bytes and writes each fragment through `BytesMut`'s writer,
/// growing as it goes; a refresh's answer is written on every refresh.
pub(crate) fn json_answer<T: Serialize>(value: &T, capacity: usize) -> Response {
    let mut body = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        // A wire type with a map of non-string keys, which none has.
        Err(error) => super::ApiError::from(sessiond_core::Error::Corrupt(format!(
            "an answer did not serialize: {error}"
        )))
        .into_response(),
    }
}

/// RFC 3339 in UTC with milliseconds, written into a string of its length
/// (`2026-12-07T16:50:00.123Z`), not grown to it.
pub(crate) fn rfc3339(instant: Timestamp) -> String {
    let millis = u64::try_from(instant.unix_millis()).unwrap_or(0);
    let mut text = String::with_capacity(24);
    // Writing into a `String` does not fail.
    let _ = write!(
        text,
        "{}",
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis))
    );
    text
}

/// The wire view of `session`; `current` is `Some` only when the caller is a user.
pub(crate) fn session_view(session: &Session, caller_session: Option<SessionId>) -> SessionView {
    SessionView {
        id: session.id.to_string(),
        user_id: session.user_id.to_string(),
        tenant_id: session.tenant_id.as_ref().map(ToString::to_string),
        device: DeviceView {
            id: session.device.id.to_string(),
            name: session.device.name.clone(),
            device_type: session.device.device_type.as_str().to_owned(),
            browser: session.device.browser.clone(),
            os: session.device.os.clone(),
            trusted: session.device.trusted,
        },
        ip: session.ip.clone(),
        user_agent: session.user_agent.clone(),
        created_at: rfc3339(session.created_at),
        last_active_at: rfc3339(session.last_active_at),
        idle_expires_at: rfc3339(session.idle_expires_at),
        expires_at: rfc3339(session.expires_at),
        revoked_at: session.revoked_at.map(rfc3339),
        revoke_reason: session.revoke_reason.clone(),
        current: caller_session.map(|caller| caller == session.id),
        unreadable: wire_fields(&session.unreadable),
    }
}

/// The wire names of the fields of unreadable encrypted `columns` (see
/// [`sessiond_core::integrity`]), as `docs/API.md` lists them.
fn wire_fields(columns: &[&'static str]) -> Vec<String> {
    columns
        .iter()
        .map(|column| {
            match *column {
                SESSION_DEVICE_NAME => "device.name",
                SESSION_IP => "ip",
                SESSION_USER_AGENT | DEVICE_USER_AGENT => "user_agent",
                SESSION_METADATA => "metadata",
                DEVICE_NAME => "name",
                DEVICE_LAST_IP => "last_ip",
                other => other,
            }
            .to_owned()
        })
        .collect()
}

/// The `token_type` of a session's tokens (RFC 9449 §5): `DPoP` once it is bound to a key.
pub(crate) fn token_type(session: &Session) -> &'static str {
    if session.dpop_jkt.is_some() {
        "DPoP"
    } else {
        "Bearer"
    }
}

/// An answer's `expires_in` for an access token expiring at `access_expires_at_ms` in a pair
/// issued (or replayed) `at`: in whole seconds, as `exp` and `iat` are, so that a fresh pair's
/// equals its token's `exp - iat` however long writing it took.
pub(crate) fn expires_in(access_expires_at_ms: i64, at: Timestamp) -> i64 {
    (access_expires_at_ms.div_euclid(1000) - at.unix_seconds()).max(0)
}

/// The wire token pair of `issued`.
pub(crate) fn token_pair(issued: &IssuedSession, as_user: bool) -> TokenPairResponse {
    let IssuedPair {
        access_token,
        access_expires_at_ms,
        refresh_token,
        refresh_expires_at_ms,
    } = &issued.pair;
    let access_expires_at = Timestamp::from_unix_millis(*access_expires_at_ms);
    TokenPairResponse {
        access_token: access_token.clone(),
        token_type: token_type(&issued.session).into(),
        expires_in: expires_in(*access_expires_at_ms, issued.at),
        access_token_expires_at: rfc3339(access_expires_at),
        refresh_token: refresh_token.clone(),
        refresh_token_expires_at: rfc3339(Timestamp::from_unix_millis(*refresh_expires_at_ms)),
        session: session_view(&issued.session, as_user.then_some(issued.session.id)),
    }
}

/// The wire view of a registered device; `current` is `Some` only when the caller is a user.
pub(crate) fn device_view(record: &DeviceRecord, current: Option<bool>) -> RegisteredDeviceView {
    RegisteredDeviceView {
        device: DeviceView {
            id: record.device.id.to_string(),
            name: record.device.name.clone(),
            device_type: record.device.device_type.as_str().to_owned(),
            browser: record.device.browser.clone(),
            os: record.device.os.clone(),
            trusted: record.device.trusted,
        },
        user_agent: record.user_agent.clone(),
        last_ip: record.last_ip.clone(),
        first_seen_at: rfc3339(record.first_seen_at),
        last_seen_at: rfc3339(record.last_seen_at),
        current,
        unreadable: wire_fields(&record.unreadable),
    }
}

#[cfg(test)]
mod tests {
    use sessiond_core::Timestamp;

    use super::{expires_in, rfc3339};

    /// Every instant the wire shows is written in full, with its milliseconds, in the string
    /// sized for it.
    #[test]
    fn instants_are_rfc3339_with_milliseconds_in_utc() {
        for (millis, text) in [
            (1_764_910_000_123, "2025-12-05T04:46:40.123Z"),
            (1_764_910_000_000, "2025-12-05T04:46:40.000Z"),
            (0, "1970-01-01T00:00:00.000Z"),
        ] {
            let written = rfc3339(Timestamp::from_unix_millis(millis));
            assert_eq!(written, text);
            assert_eq!(written.capacity(), text.len());
        }
    }

    /// A pair issued a millisecond before a second ends, with a 900 s access token: its answer
    /// says 900 whenever it is written, a replay 10.5 s later says what is left, and an expired
    /// token 0.
    #[test]
    fn expires_in_counts_from_when_the_pair_was_issued() {
        let issued = Timestamp::from_unix_millis(1_800_000_999);
        let exp = issued.unix_millis() + 900_000;
        assert_eq!(expires_in(exp, issued), 900);
        let replayed = Timestamp::from_unix_millis(issued.unix_millis() + 10_500);
        assert_eq!(expires_in(exp, replayed), 889);
        let late = Timestamp::from_unix_millis(exp + 1);
        assert_eq!(expires_in(exp, late), 0);
    }
}
