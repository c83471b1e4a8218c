//! The verifier against the real sessiond, started in-process on a port-0 listener.

// Helpers outside `#[test]` functions panic on unexpected failures, as tests do.
#![allow(clippy::unwrap_used)]

mod dpop;
mod feed;
mod helpers;
mod http;
mod keys;
mod tls;
mod verify;
