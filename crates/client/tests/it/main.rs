//! Integration tests of `sessiond-client` against the real sessiond server, started in-process.

mod dpop;
mod events;
mod file_store;
mod helpers;
mod refresh;
mod requests;
mod retry;
mod secrets;
mod sign_out;
mod tls;
