//! What refreshes leave in the audit trail: sampled `session.refreshed` rows, the period of
//! the aggregated failure rows, and anomaly detection with its policy.

use std::time::Duration;

use sessiond_core::anomaly::{AnomalyPolicy, AnomalySettings, Signal};
use sessiond_core::audit::RefreshAudit;

use super::values::*;
use super::*;

/// `SESSIOND_AUDIT_FAILURE_PERIOD`: a duration from 1 s to 1 h.
pub(super) fn audit_failure_period(value: Option<&str>) -> Result<Duration, String> {
    const NAME: &str = "SESSIOND_AUDIT_FAILURE_PERIOD";
    let period = duration(value, NAME, crate::refresh_failures::DEFAULT_PERIOD)?;
    if period < Duration::from_secs(1) || period > Duration::from_secs(3600) {
        return Err(format!(
            "{NAME} must be from 1s to 1h (got {:?})",
            value.unwrap_or_default()
        ));
    }
    Ok(period)
}

/// `SESSIOND_AUDIT_REFRESHES`: `all`, `off` or `sample:N` with N from 1 to 1,000,000.
pub(super) fn audit_refreshes(value: Option<&str>) -> Result<RefreshAudit, String> {
    let text = match value.map(str::trim) {
        None | Some("all") => return Ok(RefreshAudit::All),
        Some("off") => return Ok(RefreshAudit::Off),
        Some(text) => text,
    };
    text.strip_prefix("sample:")
        .and_then(|every| every.parse::<u32>().ok())
        .filter(|every| (1..=1_000_000).contains(every))
        .map(RefreshAudit::Sample)
        .ok_or_else(|| {
            format!(
                "SESSIOND_AUDIT_REFRESHES must be all, off or sample:N with N from 1 to 1000000 \
                 (got {text:?})"
            )
        })
}

/// `SESSIOND_ANOMALY_POLICY` and `SESSIOND_ANOMALY_CHECKS`.
pub(super) fn anomaly(raw: &RawConfig) -> Result<AnomalySettings, String> {
    let policy = match raw.anomaly_policy.as_deref().map(str::trim) {
        None => AnomalyPolicy::default(),
        Some(name) => AnomalyPolicy::from_name(name).ok_or_else(|| {
            format!("SESSIOND_ANOMALY_POLICY must be allow, notify or revoke (got {name:?})")
        })?,
    };
    let checks = match raw.anomaly_checks.as_deref() {
        None => Signal::ALL.to_vec(),
        Some(text) => {
            let mut checks = Vec::new();
            for name in entries(Some(text)) {
                let signal = Signal::from_name(name).ok_or_else(|| {
                    format!(
                        "SESSIOND_ANOMALY_CHECKS must list network, browser or os, separated \
                         by commas (got {name:?})"
                    )
                })?;
                if !checks.contains(&signal) {
                    checks.push(signal);
                }
            }
            checks.sort();
            checks
        }
    };
    Ok(AnomalySettings { policy, checks })
}
