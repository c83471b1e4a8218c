//! Rate limits at the edge: the client address of a request, and the turning of a
//! [`Refusal`] into a counted, audited `429`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde_json::{Map, Value};
use sessiond_core::anomaly::RequestOrigin;
use sessiond_core::audit::{NewAuditEvent, Severity};
use sessiond_core::{SessionId, Timestamp, UserId};

use super::ApiError;
use crate::admin_auth::AdminKeyId;
use crate::ratelimit::{Limit, LimitKey, Refusal, ip_key};
use crate::state::AppState;

/// The client's address: the socket peer's, or what a trusted proxy reports (see
/// [`crate::ratelimit::ClientIpSource`]). `None` only when the server runs without connection
/// info (a router driven in-process), and then no per-address limit applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub(crate) Option<IpAddr>);

impl ClientIp {
    /// The key of its per-address limits.
    pub(crate) fn key(self) -> Option<LimitKey> {
        self.0.map(ip_key)
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        Ok(Self(client_ip(parts, state)))
    }
}

/// Where a refresh comes from, for anomaly detection: the client address and the
/// `User-Agent` header (left out when it is not visible text).
pub(crate) fn request_origin(client: ClientIp, headers: &HeaderMap) -> RequestOrigin {
    RequestOrigin {
        ip: client.0,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
    }
}

pub(crate) fn client_ip(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    Some(
        state
            .limits
            .client_ip_source()
            .client_ip(peer, &parts.headers),
    )
}

/// Whom a refused request concerned, for its audit row.
#[derive(Debug, Default)]
pub(crate) struct Subject {
    pub(crate) ip: Option<IpAddr>,
    pub(crate) user_id: Option<UserId>,
    pub(crate) session_id: Option<SessionId>,
    pub(crate) admin_key: Option<AdminKeyId>,
}

/// Counts `refusal`, writes its audit row when it is due (the key's first refusal in the
/// limit's period, within the process's audit budget), and returns the `429`.
pub(crate) async fn refused(state: &AppState, refusal: Refusal, subject: Subject) -> ApiError {
    state.metrics.record_rate_limited(refusal.limit);
    if refusal.audit {
        let admin_key = subject.admin_key.map(|key| key.short());
        tracing::warn!(
            limit = refusal.limit.as_str(),
            ip = subject.ip.map(tracing::field::display),
            session_id = subject.session_id.map(tracing::field::display),
            admin_key = admin_key.as_deref(),
            "rate limited"
        );
        let mut details = Map::new();
        details.insert("limit".into(), Value::from(refusal.limit.as_str()));
        details.insert("quota".into(), Value::from(refusal.quota.to_string()));
        details.insert(
            "retry_after".into(),
            Value::from(refusal.retry_after_seconds()),
        );
        if let Some(admin_key) = admin_key {
            details.insert("admin_key".into(), Value::from(admin_key));
        }
        let event = NewAuditEvent {
            kind: "security.rate_limited",
            severity: Severity::Warning,
            user_id: subject.user_id,
            session_id: subject.session_id,
            ip: subject.ip.map(|ip| ip.to_string()),
            at: state.service.now(),
            details,
        };
        // The answer does not depend on the audit row: a failed write is logged, and the
        // request is refused all the same.
        if let Err(error) = state.service.store().append_audit(&[event]).await {
            tracing::warn!(error = %error, "could not audit a rate-limited request");
        }
    }
    ApiError::RateLimited(refusal)
}

/// Answers a credential that did not authenticate. It counts against its address's
/// failed-authentication allowance; once that is spent the answer is the `429` instead of
/// `refusal`. Only invalid credentials come here: the limit throttles failures and never
/// refuses a credential that is valid, so an attacker sharing an address (a NAT, a proxy) with
/// legitimate clients cannot lock them out.
pub(crate) async fn failed_credential(
    state: &AppState,
    ip: Option<IpAddr>,
    now: Timestamp,
    refusal: ApiError,
) -> ApiError {
    let Some(ip) = ip else {
        return refusal;
    };
    let key = ip_key(ip);
    if let Err(limited) = state.limits.check_spent(Limit::FailedAuthPerIp, &key, now) {
        let subject = Subject {
            ip: Some(ip),
            ..Subject::default()
        };
        return refused(state, limited, subject).await;
    }
    state.limits.record_failure(&key, now);
    refusal
}
