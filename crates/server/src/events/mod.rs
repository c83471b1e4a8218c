//! Live events: the tailer that reads them from the store, the hub that fans them out, and the
//! per-client stream that resumes from a cursor. The HTTP side is `http::events`.
//!
//! An event's way from a change to a client:
//!
//! 1. A change commits together with its events (`session.created` with the session,
//!    `session.refreshed` with the rotation, `session.revoked` with the revocation, preceded by
//!    `security.reuse_detected` when that is why, `session.expired` when the expiry announcer
//!    marks a session). A change that rolls back leaves no event, and no event describes a
//!    change that did not happen.
//! 2. The writing process's `InstrumentedStore` pokes the [`EventHub`] after the commit. Other
//!    instances learn of new events from their tailer's poll (100 ms on PostgreSQL, 1 s on a
//!    SQLite file, which only the `sessiond` commands share), or at once for revocations,
//!    whose `LISTEN/NOTIFY` feed also pokes the hub.
//! 3. Each process's tailer reads `events_after(its cursor)`, which returns only events whose
//!    position is final, and publishes them to the hub in cursor order. While streams are open
//!    it waits 5 ms after a wake-up so that writes arriving together share one
//!    read. With none open, once a poll, it moves its cursor to the newest final event without
//!    reading the events it passes (unless a stream subscribed meanwhile), so that no process
//!    pays for events nobody is waiting for: not the refresh path of its own writes, nor each
//!    instance for the events of all the others.
//! 4. The hub serialises each event once and offers it to the streams of that user and to
//!    admin streams; a full queue (1,024 events) drops the stream, which is told it `lagged`.
//! 5. A stream that connects with a cursor subscribes first, then replays from the store; the
//!    two overlap, and anything at or before the last event it sent is skipped, so it sends
//!    each event once and in order. Without a cursor it starts at the newest event stored when
//!    it connects.
//!
//! Why nothing is lost inside the retention window (`SESSIOND_EVENT_RETENTION`, 24 h): every
//! event a stream has not yet sent either is final at the time of its replay query (and the
//! replay returns it) or becomes final later (and the tailer publishes it after the stream
//! subscribed). A tailer that moves its cursor without reading passes only events that were
//! final before the stream subscribed, hence before its replay query (`tailer::catch_up`). A
//! client that reconnects with its last cursor repeats the argument.

pub mod hub;
pub(crate) mod stream;
pub(crate) mod tailer;

pub use hub::EventHub;
