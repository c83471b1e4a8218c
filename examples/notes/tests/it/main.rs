//! The notes example end to end: sessiond in-process with a clock the test moves, the notes
//! API beside it, and the CLI signed in through them for an hour of simulated time.

// Helpers outside `#[test]` functions panic on unexpected failures, as tests do.
#![allow(clippy::unwrap_used)]

mod flow;
mod helpers;
