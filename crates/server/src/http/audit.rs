//! `GET /v1/audit`: the sealed audit trail, filtered and paged, for admins.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use sessiond_core::audit::{AuditQuery, SealedAuditEvent, hex};
use sessiond_core::{SessionId, Timestamp, UserId};
use sessiond_wire::{AuditEventView, AuditPage};

use super::ApiError;
use super::convert::rfc3339;
use super::extract::{AdminCaller, Read};
use crate::state::AppState;

/// Events per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// The largest page.
const MAX_LIMIT: u32 = 1_000;

/// The query of `GET /v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    user_id: Option<String>,
    session_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    /// A seq (events after it) or an RFC 3339 instant (events at or after it).
    since: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/audit/verify`: recomputes the sealed chain, as `sessiond audit verify` does.
/// `ok` is false when an event was altered, removed or reordered; `first_bad_seq` names the
/// first bad one and `reason` what is wrong there. Events not sealed yet (about a second old)
/// are not part of the check.
pub(crate) async fn verify(
    State(state): State<AppState>,
    _admin: AdminCaller<Read>,
) -> Result<Json<Value>, ApiError> {
    let answer = match state.service.verify_audit().await? {
        Ok(summary) => json!({
            "ok": true,
            "first_bad_seq": null,
            "reason": null,
            "events": summary.events,
            "checkpoint_seq": summary.checkpoint,
            "head_seq": summary.head_seq,
            "head_hash": hex(&summary.head_hash),
        }),
        Err(broken) => json!({
            "ok": false,
            "first_bad_seq": broken.seq,
            "reason": broken.reason,
            "events": null,
            "checkpoint_seq": null,
            "head_seq": null,
            "head_hash": null,
        }),
    };
    Ok(Json(answer))
}

/// `GET /v1/audit`: sealed events in seq order. A full page carries `next`, the `since` of the
/// page after it.
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: AdminCaller<Read>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(params) = params.map_err(|rejection| {
        ApiError::BadRequest(format!("invalid query: {}", rejection.body_text()))
    })?;
    let (query, limit) = audit_query(params)?;
    let events = state.service.audit_events(&query, limit).await?;
    let next = (events.len() == limit as usize)
        .then(|| events.last().map(|event| event.seq.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        events: events
            .iter()
            .map(|event| audit_event_view(event, state.service.audit_ip(event)))
            .collect(),
        next,
    }))
}

fn audit_query(params: AuditParams) -> Result<(AuditQuery, u32), ApiError> {
    let invalid = |field: &'static str, message: &str| {
        ApiError::from(sessiond_core::Error::invalid(field, message))
    };
    let limit = match params.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|limit| (1..=MAX_LIMIT).contains(limit))
            .ok_or_else(|| invalid("limit", "must be an integer from 1 to 1000"))?,
    };
    let mut query = AuditQuery::default();
    if let Some(user) = params.user_id {
        query.user_id = Some(
            UserId::parse(user, "user_id").map_err(|_| invalid("user_id", "is not a user id"))?,
        );
    }
    if let Some(session) = params.session_id {
        query.session_id = Some(
            SessionId::parse(&session, "session_id")
                .map_err(|_| invalid("session_id", "must be a session id (a UUID)"))?,
        );
    }
    query.kind = params.kind.filter(|kind| !kind.is_empty());
    if query
        .kind
        .as_deref()
        .is_some_and(|kind| !is_event_type(kind))
    {
        return Err(invalid(
            "type",
            "must be an event type: at most 64 ASCII letters, digits, '.', '_' or '-'",
        ));
    }
    if let Some(since) = params.since.filter(|since| !since.is_empty()) {
        parse_since(&since, &mut query)
            .ok_or_else(|| invalid("since", "must be a seq or an RFC 3339 instant"))?;
    }
    Ok((query, limit))
}

/// Whether `kind` can name an event type (`session.created`, `security.reuse_detected`). Any
/// other text matches no event, and a NUL byte is refused by PostgreSQL's text type, so the
/// filter refuses it before it reaches a store.
fn is_event_type(kind: &str) -> bool {
    kind.len() <= 64
        && kind
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// Sets `query` to start after the seq `since`, or at the RFC 3339 instant `since`; `None`
/// when it is neither.
pub(crate) fn parse_since(since: &str, query: &mut AuditQuery) -> Option<()> {
    if since.bytes().all(|byte| byte.is_ascii_digit()) {
        query.after_seq = since.parse().ok()?;
    } else {
        let elapsed = humantime::parse_rfc3339_weak(since)
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        query.since = Some(Timestamp::from_unix_millis(
            i64::try_from(elapsed.as_millis()).ok()?,
        ));
    }
    Some(())
}

/// The wire view of a sealed event whose address, opened, is `ip` (export uses it too).
pub(crate) fn audit_event_view(event: &SealedAuditEvent, ip: Option<String>) -> AuditEventView {
    let entry = &event.entry;
    AuditEventView {
        seq: event.seq,
        kind: entry.kind.clone(),
        severity: entry.severity.clone(),
        user_id: entry.user_id.clone(),
        session_id: entry.session_id.clone(),
        stored_ip: entry
            .ip
            .clone()
            .filter(|stored| ip.as_ref() != Some(stored)),
        ip,
        at: rfc3339(entry.at),
        details: serde_json::from_str(&entry.details).unwrap_or_default(),
        hash: hex(&event.hash),
        prev_hash: hex(&event.prev_hash),
    }
}
