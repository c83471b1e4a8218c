//! The audit trail of failed refreshes, aggregated so that a flood cannot flood it.
//!
//! A refresh refused because its token is unknown, its session expired or revoked writes no
//! audit row of its own (it changes nothing), yet a run of them is what an attack looks like.
//! [`RefreshFailures`] counts them in memory per client address and reason, and every period
//! (`SESSIOND_AUDIT_FAILURE_PERIOD`, 60 s by default) writes one `security.refresh_failures`
//! event per pair that occurred, with the count and the first and last time seen; the
//! background task also writes what is pending when the server stops. Memory is bounded: at
//! most [`MAX_SOURCES`] pairs are told apart per period, and failures from any further
//! address are added to one overflow event per reason (no `ip`, `"overflow": true`).
//! Reuse detections and anomalies are not counted here: each writes its own event.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value};
use sessiond_core::Timestamp;
use sessiond_core::audit::{NewAuditEvent, Severity};
use sessiond_core::error::RefreshRejection;
use sessiond_core::store::{Store, StoreError};

use crate::http::convert::rfc3339;

/// The audit event type of a period's failures from one address.
pub const REFRESH_FAILURES: &str = "security.refresh_failures";

/// Distinct (address, reason) pairs kept per period; failures beyond go to the overflow.
pub const MAX_SOURCES: usize = 1_024;

/// The default period between two writes (`SESSIOND_AUDIT_FAILURE_PERIOD`).
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(60);

/// How many failures, and when the first and last happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    count: u64,
    first_seen: Timestamp,
    last_seen: Timestamp,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.count = self.count.saturating_add(other.count);
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
    }
}

/// Failures counted since the last write.
#[derive(Debug, Default)]
struct Pending {
    by_source: HashMap<(Option<IpAddr>, &'static str), Tally>,
    /// Per reason, failures from addresses that found [`MAX_SOURCES`] pairs already counted.
    overflow: HashMap<&'static str, Tally>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.by_source.is_empty() && self.overflow.is_empty()
    }

    fn add(&mut self, ip: Option<IpAddr>, reason: &'static str, tally: Tally) {
        if let Some(existing) = self.by_source.get_mut(&(ip, reason)) {
            existing.add(tally);
        } else if self.by_source.len() < MAX_SOURCES {
            self.by_source.insert((ip, reason), tally);
        } else {
            self.add_overflow(reason, tally);
        }
    }

    fn add_overflow(&mut self, reason: &'static str, tally: Tally) {
        self.overflow
            .entry(reason)
            .and_modify(|existing| existing.add(tally))
            .or_insert(tally);
    }

    /// Puts back what a failed write took out.
    fn merge(&mut self, other: Pending) {
        for ((ip, reason), tally) in other.by_source {
            self.add(ip, reason, tally);
        }
        for (reason, tally) in other.overflow {
            self.add_overflow(reason, tally);
        }
    }

    /// One audit event per pair, then one per overflowing reason, in a stable order.
    fn events(&self, now: Timestamp, period: Duration) -> Vec<NewAuditEvent> {
        let mut sources: Vec<_> = self.by_source.iter().collect();
        sources.sort_unstable_by_key(|((ip, reason), _)| (*reason, *ip));
        let mut overflow: Vec<_> = self.overflow.iter().collect();
        overflow.sort_unstable_by_key(|(reason, _)| **reason);
        let period_seconds = period.as_secs();
        sources
            .into_iter()
            .map(|((ip, reason), tally)| event(*ip, reason, *tally, false, now, period_seconds))
            .chain(
                overflow
                    .into_iter()
                    .map(|(reason, tally)| event(None, reason, *tally, true, now, period_seconds)),
            )
            .collect()
    }
}

fn event(
    ip: Option<IpAddr>,
    reason: &str,
    tally: Tally,
    overflow: bool,
    now: Timestamp,
    period_seconds: u64,
) -> NewAuditEvent {
    let mut details = Map::new();
    details.insert("reason".into(), Value::from(reason));
    details.insert("count".into(), Value::from(tally.count));
    details.insert("first_seen".into(), Value::from(rfc3339(tally.first_seen)));
    details.insert("last_seen".into(), Value::from(rfc3339(tally.last_seen)));
    details.insert("period_seconds".into(), Value::from(period_seconds));
    if overflow {
        details.insert("overflow".into(), Value::from(true));
    }
    NewAuditEvent {
        kind: REFRESH_FAILURES,
        severity: Severity::Warning,
        user_id: None,
        session_id: None,
        ip: ip.map(|ip| ip.to_string()),
        at: now,
        details,
    }
}

/// Failed refreshes counted per client address and reason, written to the audit trail once a
/// period (see the module's documentation).
#[derive(Debug)]
pub struct RefreshFailures {
    period: Duration,
    pending: Mutex<Pending>,
}

impl RefreshFailures {
    /// Counts failures and writes them every `period`.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            pending: Mutex::new(Pending::default()),
        }
    }

    /// How often the background task writes what was counted.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Counts one refresh refused for `reason` from `ip` (the client address, when known).
    /// Reuse detections and anomalies are left out: they write events of their own.
    pub fn record(&self, ip: Option<IpAddr>, reason: RefreshRejection, now: Timestamp) {
        let reason = match reason {
            RefreshRejection::Unknown | RefreshRejection::Expired | RefreshRejection::Revoked => {
                reason.as_str()
            }
            RefreshRejection::ReuseDetected | RefreshRejection::Anomaly => return,
        };
        let tally = Tally {
            count: 1,
            first_seen: now,
            last_seen: now,
        };
        self.lock()
            .add(ip.map(|ip| ip.to_canonical()), reason, tally);
    }

    /// Writes what was counted since the last write as `security.refresh_failures` events
    /// dated `now`, in one append; returns how many events. A failed write keeps the counts
    /// for the next attempt.
    ///
    /// # Errors
    /// The store's error; nothing is lost then.
    pub async fn flush(&self, store: &dyn Store, now: Timestamp) -> Result<usize, StoreError> {
        let taken = std::mem::take(&mut *self.lock());
        if taken.is_empty() {
            return Ok(0);
        }
        let events = taken.events(now, self.period);
        match store.append_audit(&events).await {
            Ok(()) => Ok(events.len()),
            Err(error) => {
                self.lock().merge(taken);
                Err(error)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000 + millis)
    }

    fn address(n: u32) -> Option<IpAddr> {
        Some(IpAddr::from(std::net::Ipv4Addr::from(0xC000_0200 + n)))
    }

    #[test]
    fn failures_are_counted_per_address_and_reason_with_first_and_last_seen() {
        let failures = RefreshFailures::new(DEFAULT_PERIOD);
        for n in 0..5 {
            failures.record(address(1), RefreshRejection::Unknown, at(n * 1000));
        }
        failures.record(address(1), RefreshRejection::Expired, at(7));
        failures.record(address(2), RefreshRejection::Unknown, at(9));
        failures.record(address(2), RefreshRejection::ReuseDetected, at(9));
        failures.record(address(2), RefreshRejection::Anomaly, at(9));
        let events = failures.lock().events(at(60_000), DEFAULT_PERIOD);
        let summary: Vec<_> = events
            .iter()
            .map(|event| {
                (
                    event.ip.clone().unwrap_or_default(),
                    event.details["reason"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    event.details["count"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("192.0.2.1".to_owned(), "expired".to_owned(), 1),
                ("192.0.2.1".to_owned(), "unknown".to_owned(), 5),
                ("192.0.2.2".to_owned(), "unknown".to_owned(), 1),
            ]
        );
        let unknown = &events[1];
        assert_eq!(unknown.kind, REFRESH_FAILURES);
        assert_eq!(unknown.severity, Severity::Warning);
        assert_eq!(unknown.at, at(60_000));
        assert_eq!(unknown.details["first_seen"], rfc3339(at(0)));
        assert_eq!(unknown.details["last_seen"], rfc3339(at(4000)));
        assert_eq!(unknown.details["period_seconds"], 60);
    }

    #[test]
    fn a_flood_of_addresses_keeps_memory_bounded_in_one_overflow_event_per_reason() {
        let failures = RefreshFailures::new(DEFAULT_PERIOD);
        let sources = u32::try_from(MAX_SOURCES).unwrap();
        for n in 0..sources + 5_000 {
            failures.record(address(n), RefreshRejection::Unknown, at(i64::from(n)));
        }
        failures.record(address(sources + 1), RefreshRejection::Revoked, at(1));
        // An address already counted keeps its own event after the table is full.
        failures.record(address(0), RefreshRejection::Unknown, at(99_999));
        let pending = failures.lock();
        assert_eq!(pending.by_source.len(), MAX_SOURCES);
        let events = pending.events(at(100_000), DEFAULT_PERIOD);
        assert_eq!(events.len(), MAX_SOURCES + 2);
        let overflow: Vec<_> = events
            .iter()
            .filter(|event| event.details.get("overflow").is_some())
            .collect();
        assert_eq!(overflow.len(), 2);
        assert!(overflow.iter().all(|event| event.ip.is_none()));
        assert_eq!(overflow[0].details["reason"], "revoked");
        assert_eq!(overflow[1].details["reason"], "unknown");
        assert_eq!(overflow[1].details["count"], 5_000);
        let first = events
            .iter()
            .find(|event| event.ip.as_deref() == Some("192.0.2.0"))
            .unwrap();
        assert_eq!(first.details["count"], 2);
        let total: u64 = events
            .iter()
            .map(|event| event.details["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, u64::from(sources) + 5_000 + 2);
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_their_ipv4_address() {
        let failures = RefreshFailures::new(DEFAULT_PERIOD);
        failures.record(address(3), RefreshRejection::Unknown, at(0));
        failures.record(
            Some("::ffff:192.0.2.3".parse().unwrap()),
            RefreshRejection::Unknown,
            at(1),
        );
        assert_eq!(failures.lock().by_source.len(), 1);
    }
}
