//! The JSON bodies of sessiond's HTTP API (`API.md`), shared by the server and its clients.
//!
//! Requests refuse unknown fields, so a misspelt field (`permision`) is an error rather than a
//! silently ignored setting.

pub mod sse;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// The authenticated user.
    pub user_id: String,
    /// The user's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The device the user signed in on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceRequest>,
    /// Claims for every access token of the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Map<String, Value>>,
    /// Application data kept with the session, never put in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// The RFC 7638 thumbprint of the client's DPoP key (RFC 9449 `dpop_jkt`): the session's
    /// refreshes then need a proof signed with that key, and its access tokens are bound to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
}

/// The device part of [`CreateSessionRequest`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRequest {
    /// The client's device id; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A human name for the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The client's `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The client's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `POST /v1/sessions/refresh`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token to spend.
    pub refresh_token: String,
}

/// `POST /v1/sessions/revoke-all`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeAllRequest {
    /// Keep the session of the calling access token.
    #[serde(default)]
    pub except_current: bool,
}

/// A session's device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    /// The device id.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// `desktop`, `mobile`, `tablet`, `bot` or `unknown`.
    #[serde(rename = "type")]
    pub device_type: String,
    /// Browser family.
    pub browser: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// Whether the user marked the device as trusted.
    pub trusted: bool,
}

/// A device in a user's registry (`GET /v1/devices`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredDeviceView {
    /// The device id, the name, type, browser and OS as last seen, and the trusted mark.
    #[serde(flatten)]
    pub device: DeviceView,
    /// The user agent it last sent.
    pub user_agent: Option<String>,
    /// The address it last came from.
    pub last_ip: Option<String>,
    /// When a session was first created from it.
    pub first_seen_at: String,
    /// The latest activity of any of its sessions.
    pub last_seen_at: String,
    /// Only for a user: whether it is the device of the caller's own session.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub current: Option<bool>,
    /// Only when some encrypted field of the stored device does not open: the fields that read
    /// as `null` (`name`, `user_agent`, `last_ip`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

/// `GET /v1/devices` and `GET /v1/users/{user_id}/devices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceList {
    /// Most recently seen first.
    pub devices: Vec<RegisteredDeviceView>,
}

/// The body of `POST /v1/devices/{id}/trust` (optional: trusts when absent).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRequest {
    /// `false` withdraws trust.
    #[serde(default = "trusted_by_default")]
    pub trusted: bool,
}

impl Default for TrustRequest {
    fn default() -> Self {
        Self { trusted: true }
    }
}

fn trusted_by_default() -> bool {
    true
}

/// A session as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// Its user.
    pub user_id: String,
    /// Its tenant.
    pub tenant_id: Option<String>,
    /// Its device.
    pub device: DeviceView,
    /// The client IP at creation.
    pub ip: Option<String>,
    /// The client user agent at creation.
    pub user_agent: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub last_active_at: String,
    /// RFC 3339.
    pub idle_expires_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
    /// Only when the caller is a user: whether this is the caller's own session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<bool>,
    /// Only when some encrypted field of the stored session does not open: the fields that
    /// read as `null` (`device.name`, `ip`, `user_agent`; `metadata`, never shown, as empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

/// A token pair and its session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenPairResponse {
    /// The access token (a JWT).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// RFC 3339.
    pub access_token_expires_at: String,
    /// The refresh token (opaque, single use).
    pub refresh_token: String,
    /// RFC 3339.
    pub refresh_token_expires_at: String,
    /// The session.
    pub session: SessionView,
}

/// `GET /v1/sessions` and `GET /v1/users/{user_id}/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionList {
    /// Active sessions, most recently active first.
    pub sessions: Vec<SessionView>,
}

/// `GET /v1/sessions/current`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurrentSession {
    /// The session.
    #[serde(flatten)]
    pub session: SessionView,
    /// The claims of the presented access token.
    pub claims: Map<String, Value>,
}

/// The answer of the revoke-all routes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RevokedCount {
    /// How many sessions were revoked.
    pub revoked: usize,
}

/// `GET /v1/stats`. Session counts are read from storage when asked; the other figures count
/// what this process has done since it started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// Sessions neither revoked nor expired.
    pub active_sessions: u64,
    /// Distinct (user, device) pairs among the active sessions.
    pub active_devices: u64,
    /// Mean time from creation to last activity of the active sessions, in seconds.
    pub average_session_duration_seconds: f64,
    /// Refresh requests answered, successful or not.
    pub refreshes: u64,
    /// Refresh requests refused or failed.
    pub refresh_failures: u64,
    /// Refreshes by outcome: `rotated`, `replayed`, `unknown`, `expired`, `revoked`,
    /// `reuse_detected`, `error`.
    pub refreshes_by_outcome: Map<String, Value>,
    /// Mean server time of a refresh, in milliseconds; 0 before the first.
    pub average_refresh_ms: f64,
    /// Refreshes answered by replaying the successor inside the grace window.
    pub grace_window_hits: u64,
    /// Error answers by `error` code.
    pub errors: Map<String, Value>,
    /// Sessions in the in-memory revoked set.
    pub revoked_set_size: u64,
}

/// The body of every non-2xx answer of a `/v1` route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The stable error code.
    pub error: String,
    /// A human explanation.
    pub message: String,
    /// For `invalid_refresh_token`: `unknown`, `expired`, `revoked`, `reuse_detected` or
    /// `anomaly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `rate_limited` and `unavailable`: seconds to wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The id of the request, as logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `POST /oauth/token` (RFC 6749 §6), sent as `application/x-www-form-urlencoded`. Parameters
/// the server does not know (`client_id`, `scope`) are ignored, as RFC 6749 §3.2 asks; a
/// parameter given twice is an error.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OAuthTokenRequest {
    /// Must be `refresh_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<String>,
    /// The refresh token to spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Space-separated permissions the new access token is limited to (RFC 6749 §6); all of
    /// the session's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// A successful `POST /oauth/token` (RFC 6749 §5.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuthTokenResponse {
    /// The new access token (a JWT).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The new refresh token; the one presented is spent.
    pub refresh_token: String,
    /// The access token's `scope` claim (its permissions, space-separated), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// An error of an `/oauth/*` route, in the format of RFC 6749 §5.2 (also used by RFC 7009 and
/// RFC 7662).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_grant`, `unsupported_grant_type`, `invalid_client`,
    /// `temporarily_unavailable` or `server_error`.
    pub error: String,
    /// A human explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// `POST /oauth/introspect` (RFC 7662) and `POST /oauth/revoke` (RFC 7009), both sent as
/// `application/x-www-form-urlencoded`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OAuthTokenOnlyRequest {
    /// The token to introspect or revoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `access_token` or `refresh_token`; only a hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type_hint: Option<String>,
    /// The client's id: with `client_secret` (`client_secret_post`, RFC 6749 §2.3.1), a
    /// resource server's credentials for introspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The client's secret (`client_secret_post`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

/// A `POST /oauth/introspect` answer: `{"active": false}` alone for any token that is not
/// live, else `active: true` with the token's claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntrospectionResponse {
    /// Whether the token is live.
    pub active: bool,
    /// The claims (`sub`, `sid`, `exp`, `token_type`, …); empty when not active.
    #[serde(flatten)]
    pub claims: Map<String, Value>,
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizationServerMetadata {
    /// The issuer, equal to the `iss` of access tokens.
    pub issuer: String,
    /// `POST /oauth/token`.
    pub token_endpoint: String,
    /// `POST /oauth/introspect`.
    pub introspection_endpoint: String,
    /// `POST /oauth/revoke`.
    pub revocation_endpoint: String,
    /// The JWK Set.
    pub jwks_uri: String,
    /// `["refresh_token"]`: sessions are created by the application backend, not by a grant.
    pub grant_types_supported: Vec<String>,
    /// Empty: there is no authorization endpoint.
    pub response_types_supported: Vec<String>,
    /// `["none"]`: the refresh token is the credential.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// `["none", "Bearer"]`: the token's holder may revoke it, and so may an admin key.
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    /// `["client_secret_basic", "client_secret_post", "Bearer"]`: a resource server's id and
    /// secret, or an admin key.
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// The permissions the configured roles stand for; sessions may be granted others.
    pub scopes_supported: Vec<String>,
}

/// One sealed audit event, as `GET /v1/audit` and `sessiond audit export` give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEventView {
    /// Its position in the audit chain.
    pub seq: u64,
    /// What happened (`session.created`, `session.revoked`, `security.reuse_detected`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// The user concerned.
    pub user_id: Option<String>,
    /// The session concerned.
    pub session_id: Option<String>,
    /// The client address.
    pub ip: Option<String>,
    /// The client address as stored, sealed under the data key, when it is: what the chain's
    /// hash covers in place of `ip`. `None` when the address is stored as `ip` shows it.
    #[serde(default)]
    pub stored_ip: Option<String>,
    /// When it happened (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// Anything else recorded (`reason`, `actor`, ...).
    pub details: Map<String, Value>,
    /// SHA-256 of this event's canonical encoding (lower-case hex, see docs/audit.md).
    pub hash: String,
    /// The hash of the event before it.
    pub prev_hash: String,
}

/// `GET /v1/audit`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditPage {
    /// Sealed events in seq order.
    pub events: Vec<AuditEventView>,
    /// Pass as `since` to read the next page; `null` when this page was the last.
    pub next: Option<String>,
}
