//! The last hour of this process's counters, a minute at a time, for the admin dashboard
//! (`GET /v1/stats/history`).
//!
//! Every minute a task reads the cumulative counters of [`Metrics`] and the active-session
//! gauge and keeps the difference from the previous minute in a ring of [`HISTORY_MINUTES`]
//! entries. Nothing is stored: a restart starts an empty hour, as `/metrics` starts at zero.

use std::collections::VecDeque;
use std::sync::Mutex;

use sessiond_core::Timestamp;

use crate::metrics::{CounterTotals, Metrics};

/// How many minutes the ring keeps.
pub const HISTORY_MINUTES: usize = 60;

/// One minute of counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPoint {
    /// When the minute began.
    pub started_at: Timestamp,
    /// The active-session gauge at the minute's end (as last counted).
    pub active_sessions: u64,
    /// Refreshes answered during the minute, successful or not.
    pub refreshes: u64,
    /// Refreshes refused during the minute.
    pub refresh_failures: u64,
    /// Refresh-token reuse detections during the minute.
    pub reuse_detections: u64,
    /// Requests refused by a rate limit during the minute.
    pub rate_limited: u64,
}

#[derive(Debug)]
struct Ring {
    points: VecDeque<HistoryPoint>,
    /// The totals and instant the current minute started from.
    baseline: CounterTotals,
    started_at: Timestamp,
}

/// The ring of per-minute points.
#[derive(Debug)]
pub struct StatsHistory {
    ring: Mutex<Ring>,
}

impl StatsHistory {
    /// An empty hour whose first minute starts at `now` from the counters as they are.
    pub fn new(metrics: &Metrics, now: Timestamp) -> Self {
        Self {
            ring: Mutex::new(Ring {
                points: VecDeque::with_capacity(HISTORY_MINUTES),
                baseline: metrics.totals(),
                started_at: now,
            }),
        }
    }

    /// Closes the current minute at `now`: its counts join the ring (the oldest leaves once
    /// there are [`HISTORY_MINUTES`]) and the next minute starts.
    pub fn record(&self, metrics: &Metrics, now: Timestamp) {
        let totals = metrics.totals();
        let mut ring = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let point = point_between(&ring.baseline, &totals, ring.started_at);
        if ring.points.len() == HISTORY_MINUTES {
            ring.points.pop_front();
        }
        ring.points.push_back(point);
        ring.baseline = totals;
        ring.started_at = now;
    }

    /// The closed minutes, oldest first, and the minute in progress so far.
    pub fn snapshot(&self, metrics: &Metrics) -> (Vec<HistoryPoint>, HistoryPoint) {
        let totals = metrics.totals();
        let ring = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = point_between(&ring.baseline, &totals, ring.started_at);
        (ring.points.iter().copied().collect(), current)
    }
}

fn point_between(
    before: &CounterTotals,
    after: &CounterTotals,
    started_at: Timestamp,
) -> HistoryPoint {
    HistoryPoint {
        started_at,
        active_sessions: after.active_sessions,
        refreshes: after.refreshes.saturating_sub(before.refreshes),
        refresh_failures: after
            .refresh_failures
            .saturating_sub(before.refresh_failures),
        reuse_detections: after
            .reuse_detections
            .saturating_sub(before.reuse_detections),
        rate_limited: after.rate_limited.saturating_sub(before.rate_limited),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::Limit;

    #[test]
    fn the_ring_keeps_an_hour_of_differences() {
        let metrics = Metrics::new();
        let history = StatsHistory::new(&metrics, Timestamp::from_unix_millis(0));
        metrics.record_rate_limited(Limit::PerIp);
        metrics.record_rate_limited(Limit::PerIp);
        history.record(&metrics, Timestamp::from_unix_millis(60_000));
        metrics.record_rate_limited(Limit::PerIp);
        let (points, current) = history.snapshot(&metrics);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].rate_limited, 2);
        assert_eq!(current.rate_limited, 1);
        for minute in 2..70 {
            history.record(&metrics, Timestamp::from_unix_millis(minute * 60_000));
        }
        let (points, _) = history.snapshot(&metrics);
        assert_eq!(points.len(), HISTORY_MINUTES);
        assert_eq!(
            points[0].started_at,
            Timestamp::from_unix_millis(9 * 60_000)
        );
    }
}
