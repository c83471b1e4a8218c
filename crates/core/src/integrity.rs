//! Encrypted values that do not open: how they are reported without flooding the audit trail.
//!
//! Every encrypted column is sealed for its own row (see [`crate::crypt::aad`]), so a value
//! copied from another row, altered, or sealed under a data key that is not loaded does not
//! open. Stores read such a field as absent and name its column in the row's `unreadable` list
//! rather than failing the whole read: one bad value must not make a user's session list, or
//! the revocation of that session, fail.
//!
//! Each such value is still a sign of tampering or of a bug, so the service logs it and appends
//! a `security.integrity_failure` audit event naming the column and the row. A list read every
//! second would otherwise append an event per read; [`IntegrityReports`] lets one report per
//! row and column through per [`REPORT_INTERVAL`], remembering at most [`REPORT_CAPACITY`]
//! of them (each process on its own, and afresh after a restart).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::time::Timestamp;

/// The audit event type of an encrypted value that does not open.
pub const INTEGRITY_FAILURE: &str = "security.integrity_failure";

/// How long a reported row and column stays quiet before it is reported again.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(3600);

/// The most rows and columns remembered as reported. Past it the oldest are forgotten, so a
/// flood of distinct bad rows costs bounded memory (and at most one event per row per
/// interval while they fit).
pub const REPORT_CAPACITY: usize = 4096;

/// Which unreadable values were reported lately, to report each once per [`REPORT_INTERVAL`].
#[derive(Debug, Default)]
pub struct IntegrityReports {
    reported: Mutex<HashMap<(&'static str, String), Timestamp>>,
}

impl IntegrityReports {
    /// Whether the unreadable value of `column` in row `row` should be reported at `now`; if
    /// so, it is remembered as reported.
    pub fn should_report(&self, column: &'static str, row: &str, now: Timestamp) -> bool {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (column, row.to_owned());
        if let Some(last) = reported.get(&key)
            && now < last.plus(REPORT_INTERVAL)
        {
            return false;
        }
        if reported.len() >= REPORT_CAPACITY && !reported.contains_key(&key) {
            reported.retain(|_, last| now < last.plus(REPORT_INTERVAL));
            if reported.len() >= REPORT_CAPACITY
                && let Some(oldest) = reported
                    .iter()
                    .min_by_key(|(_, last)| **last)
                    .map(|(key, _)| key.clone())
            {
                reported.remove(&oldest);
            }
        }
        reported.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_and_column_is_reported_once_per_interval() {
        let reports = IntegrityReports::default();
        let start = Timestamp::from_unix_millis(1_000_000);
        assert!(reports.should_report("sessions.device_name", "a", start));
        assert!(!reports.should_report("sessions.device_name", "a", start));
        assert!(reports.should_report("sessions.ip", "a", start));
        assert!(reports.should_report("sessions.device_name", "b", start));
        let almost = start.plus(REPORT_INTERVAL - Duration::from_millis(1));
        assert!(!reports.should_report("sessions.device_name", "a", almost));
        assert!(reports.should_report("sessions.device_name", "a", start.plus(REPORT_INTERVAL)));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_distinct_rows() {
        let reports = IntegrityReports::default();
        let now = Timestamp::from_unix_millis(1_000_000);
        for row in 0..REPORT_CAPACITY * 2 {
            assert!(reports.should_report("devices.name", &row.to_string(), now));
        }
        let size = reports
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert_eq!(size, REPORT_CAPACITY);
    }
}
