//! How the crate's property tests run: `PROPTEST_CASES` cases per property (default
//! [`DEFAULT_CASES`]; the CI runs more), with no failure file written beside the source.

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases per property when `PROPTEST_CASES` is not set.
pub(crate) const DEFAULT_CASES: u32 = 256;

/// Runs `test` on values of `strategy`, panicking with the smallest failing input.
pub(crate) fn check<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        // A failure is turned into a named regression test, not a file beside the source.
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{failure}");
    }
}
