//! Live events: the tailer that reads them from the store, the hub that fans them out, and the
//! per-client stream that resumes from a cursor. The HTTP side is `http::events`.

pub mod hub;
pub(crate) mod stream;
pub(crate) mod tailer;

pub use hub::EventHub;
