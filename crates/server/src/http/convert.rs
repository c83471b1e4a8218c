//! From domain values to wire bodies.

use std::fmt::Write as _;
use std::io::Write as _;
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
use sessiond_core::{Session, SessionId, TenantId, Timestamp};
use sessiond_wire::{DeviceView, RegisteredDeviceView, SessionView, TokenPairResponse};
use uuid::Uuid;

/// Room for a token pair's answer: its access token (about 300 bytes with EdDSA, 450 with
/// RS256), its refresh token and the session view come to about 1.2 KB.
pub(crate) const TOKEN_PAIR_ANSWER_BYTES: usize = 2048;

/// `value` as a `200` JSON answer, written into one buffer of `capacity` bytes to begin with.
/// axum's `Json` starts from 128 bytes and writes each fragment through `BytesMut`'s writer,
/// growing as it goes; a refresh's answer is written on every refresh.
pub(crate) fn json_answer<T: Serialize>(value: &T, capacity: usize) -> Response {
    let mut body = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => json_body(body),
        // A wire type with a map of non-string keys, which none has.
        Err(error) => super::ApiError::from(sessiond_core::Error::Corrupt(format!(
            "an answer did not serialize: {error}"
        )))
        .into_response(),
    }
}

/// A `200` answer with `body`, JSON.
fn json_body(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// RFC 3339 in UTC with milliseconds, written into a string of its length
/// (`2026-12-07T16:50:00.123Z`), not grown to it.
pub(crate) fn rfc3339(instant: Timestamp) -> String {
    let mut text = String::with_capacity(24);
    // Writing into a `String` does not fail.
    let _ = write!(text, "{}", rfc3339_text(instant));
    text
}

/// [`rfc3339`]'s text, to be written where it goes.
fn rfc3339_text(instant: Timestamp) -> humantime::Rfc3339Timestamp {
    let millis = u64::try_from(instant.unix_millis()).unwrap_or(0);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis))
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
        .map(|column| wire_field(column).to_owned())
        .collect()
}

/// The wire name of an encrypted `column`'s field.
fn wire_field(column: &'static str) -> &'static str {
    match column {
        SESSION_DEVICE_NAME => "device.name",
        SESSION_IP => "ip",
        SESSION_USER_AGENT | DEVICE_USER_AGENT => "user_agent",
        SESSION_METADATA => "metadata",
        DEVICE_NAME => "name",
        DEVICE_LAST_IP => "last_ip",
        other => other,
    }
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

/// [`token_pair`] as a `200` JSON answer: the bytes `serde_json` writes for its
/// [`TokenPairResponse`], written here field by field into one buffer instead. The answer of
/// every refresh: building the wire value first (a dozen strings copied or formatted, each
/// allocated) and serializing it (its keys escaped like any string) took about three times the
/// instructions (`BENCHMARKS.md`, "Where a refresh's CPU goes").
pub(crate) fn token_pair_answer(issued: &IssuedSession, as_user: bool) -> Response {
    let mut out = JsonOut(Vec::with_capacity(TOKEN_PAIR_ANSWER_BYTES));
    write_token_pair(&mut out, issued, as_user);
    json_body(out.0)
}

/// Writes [`token_pair`]'s JSON, its fields in the wire type's order (`current` only for a
/// user, `unreadable` only when not empty, as that type skips them).
fn write_token_pair(out: &mut JsonOut, issued: &IssuedSession, as_user: bool) {
    let pair = &issued.pair;
    let session = &issued.session;
    out.raw("{\"access_token\":");
    out.string(&pair.access_token);
    out.raw(",\"token_type\":");
    out.string(token_type(session));
    out.raw(",\"expires_in\":");
    out.integer(expires_in(pair.access_expires_at_ms, issued.at));
    out.raw(",\"access_token_expires_at\":");
    out.time(Timestamp::from_unix_millis(pair.access_expires_at_ms));
    out.raw(",\"refresh_token\":");
    out.string(&pair.refresh_token);
    out.raw(",\"refresh_token_expires_at\":");
    out.time(Timestamp::from_unix_millis(pair.refresh_expires_at_ms));
    out.raw(",\"session\":{\"id\":");
    let mut id = Uuid::encode_buffer();
    out.string(session.id.as_uuid().hyphenated().encode_lower(&mut id));
    out.raw(",\"user_id\":");
    out.string(session.user_id.as_str());
    out.raw(",\"tenant_id\":");
    out.optional(session.tenant_id.as_ref().map(TenantId::as_str));
    let device = &session.device;
    out.raw(",\"device\":{\"id\":");
    out.string(device.id.as_str());
    out.raw(",\"name\":");
    out.optional(device.name.as_deref());
    out.raw(",\"type\":");
    out.string(device.device_type.as_str());
    out.raw(",\"browser\":");
    out.optional(device.browser.as_deref());
    out.raw(",\"os\":");
    out.optional(device.os.as_deref());
    out.raw(",\"trusted\":");
    out.raw(if device.trusted { "true" } else { "false" });
    out.raw("},\"ip\":");
    out.optional(session.ip.as_deref());
    out.raw(",\"user_agent\":");
    out.optional(session.user_agent.as_deref());
    out.raw(",\"created_at\":");
    out.time(session.created_at);
    out.raw(",\"last_active_at\":");
    out.time(session.last_active_at);
    out.raw(",\"idle_expires_at\":");
    out.time(session.idle_expires_at);
    out.raw(",\"expires_at\":");
    out.time(session.expires_at);
    out.raw(",\"revoked_at\":");
    match session.revoked_at {
        Some(at) => out.time(at),
        None => out.raw("null"),
    }
    out.raw(",\"revoke_reason\":");
    out.optional(session.revoke_reason.as_deref());
    if as_user {
        // The caller's own session, which [`token_pair`] marks current.
        out.raw(",\"current\":true");
    }
    if let Some((first, rest)) = session.unreadable.split_first() {
        out.raw(",\"unreadable\":[");
        out.string(wire_field(first));
        for column in rest {
            out.raw(",");
            out.string(wire_field(column));
        }
        out.raw("]");
    }
    out.raw("}}");
}

/// A JSON text being written, as `serde_json` writes it (compact).
struct JsonOut(Vec<u8>);

impl JsonOut {
    /// `json`, already JSON.
    fn raw(&mut self, json: &str) {
        self.0.extend_from_slice(json.as_bytes());
    }

    /// `value` as a JSON string. Most values (tokens, ids, times) hold nothing to escape and
    /// are copied between their quotes; any other goes through `serde_json`'s escaping, so
    /// that every string reads as `serde_json` writes it.
    fn string(&mut self, value: &str) {
        // Every byte looked at, with no early exit: the compiler then checks many at once.
        let escaped = value.bytes().fold(false, |escaped, byte| {
            escaped | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
        });
        if !escaped {
            self.0.reserve(value.len() + 2);
            self.0.push(b'"');
            self.0.extend_from_slice(value.as_bytes());
            self.0.push(b'"');
        } else {
            // Writing into a `Vec` does not fail.
            let _ = serde_json::to_writer(&mut self.0, value);
        }
    }

    /// `value` as a JSON string, or `null`.
    fn optional(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.string(value),
            None => self.raw("null"),
        }
    }

    /// `value` as a JSON number.
    fn integer(&mut self, value: i64) {
        // Writing into a `Vec` does not fail.
        let _ = write!(self.0, "{value}");
    }

    /// `instant` as [`rfc3339`] writes it, quoted.
    fn time(&mut self, instant: Timestamp) {
        self.0.push(b'"');
        // Writing into a `Vec` does not fail.
        let _ = write!(self.0, "{}", rfc3339_text(instant));
        self.0.push(b'"');
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
    use sessiond_core::crypt::columns::{SESSION_DEVICE_NAME, SESSION_METADATA};
    use sessiond_core::refresh::IssuedPair;
    use sessiond_core::service::IssuedSession;
    use sessiond_core::session::{Device, DeviceType};
    use sessiond_core::{DeviceId, TenantId, Timestamp, UserId};
    use sessiond_store_conformance::fixtures::session_for;

    use super::{JsonOut, expires_in, rfc3339, token_pair, write_token_pair};

    /// A session with every optional field empty, issued a pair at `at`.
    fn issued_at(at: i64) -> IssuedSession {
        let at = Timestamp::from_unix_millis(at);
        let mut session = session_for("alice", at);
        session.device.name = None;
        session.device.device_type = DeviceType::Unknown;
        session.device.browser = None;
        session.device.os = None;
        session.ip = None;
        session.user_agent = None;
        IssuedSession {
            pair: IssuedPair {
                access_token: "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl".into(),
                access_expires_at_ms: at.unix_millis() + 900_000,
                refresh_token: "sdr1_AbCdEf-_0123456789".into(),
                refresh_expires_at_ms: at.unix_millis() + 86_400_000,
            },
            session,
            replayed: false,
            at,
        }
    }

    /// The answer written field by field is, byte for byte, what `serde_json` writes for the
    /// wire value: with every optional field empty or set, for a user and for an admin, with
    /// strings that need escaping (quotes, backslashes, control characters) and strings that
    /// do not (non-ASCII included), a revoked session, unreadable fields and a DPoP binding.
    #[test]
    fn the_token_pair_answer_is_what_serde_json_writes_for_the_wire_value() {
        let plain = issued_at(1_764_910_000_123);
        let mut full = issued_at(1_764_910_000_999);
        full.session.tenant_id = Some(TenantId::from_trusted("acme \"corp\"".into()));
        full.session.user_id = UserId::from_trusted("ünïcode ✓ 用户".into());
        full.session.device = Device {
            id: DeviceId::from_trusted("back\\slash".into()),
            name: Some("Line\nbreak\tand \u{1} \u{1f}".into()),
            device_type: DeviceType::Mobile,
            browser: Some("Firefox".into()),
            os: Some("Android \u{7f} \u{2028}".into()),
            trusted: true,
        };
        full.session.ip = Some("2001:db8::1".into());
        full.session.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) \"quoted\"".into());
        full.session.revoked_at = Some(Timestamp::from_unix_millis(1_764_910_001_000));
        full.session.revoke_reason = Some("user_logout".into());
        full.session.dpop_jkt = Some("thumbprint".into());
        full.session.unreadable = vec![SESSION_DEVICE_NAME, SESSION_METADATA];
        let mut empty_strings = issued_at(0);
        empty_strings.session.device.name = Some(String::new());
        empty_strings.pair.access_token = String::new();
        for issued in [&plain, &full, &empty_strings] {
            for as_user in [true, false] {
                let mut out = JsonOut(Vec::new());
                write_token_pair(&mut out, issued, as_user);
                let expected = serde_json::to_vec(&token_pair(issued, as_user)).unwrap();
                assert_eq!(
                    String::from_utf8(out.0).unwrap(),
                    String::from_utf8(expected).unwrap()
                );
            }
        }
    }

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
