//! [`Clock`]: where the client reads the time that token expiry is measured in.

use std::time::{Duration, SystemTime};

/// How often the background task looks at a clock other than the system's.
pub const CUSTOM_CLOCK_POLL: Duration = Duration::from_millis(50);

/// The time, as the client sees it. The system's wall clock unless the application gives
/// another to [`SessionClientBuilder::clock`](crate::SessionClientBuilder::clock), which tests
/// do to move time by hand (next to a sessiond whose own clock they move).
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
