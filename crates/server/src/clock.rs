//! The wall clock: [`SystemClock`], the only place the server reads the time of day. Everything
//! else asks the service's clock, which tests replace with one they move.

use std::time::{SystemTime, UNIX_EPOCH};

use sessiond_core::{Clock, Timestamp};

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_unix_millis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}
